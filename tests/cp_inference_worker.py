"""Worker for tests/test_parallel.py::test_context_parallel_inference_script_matches_one_gpu, started with torchrun:
runs examples/video2world.py and also saves the decoded video tensor (before H.264 encoding) as <save_path>.pt."""

from __future__ import annotations

import sys

import torch

from cosmos_predict2.inference import cli


def keep_decoded_video(save_video):
    """Wrap cli.save_video so that the float video it encodes is also written to <path>.pt."""

    def save(path, video_3_T_H_W, fps):
        torch.save(video_3_T_H_W.clone(), f"{path}.pt")
        return save_video(path, video_3_T_H_W, fps)

    return save


if __name__ == "__main__":
    from examples import video2world

    cli.save_video = keep_decoded_video(cli.save_video)
    video2world.main(sys.argv[1:])
