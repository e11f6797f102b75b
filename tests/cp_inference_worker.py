"""Worker for the context-parallel inference tests (tests/test_parallel.py, tests/test_guidance_parallel.py,
tests/test_lora_merge.py), started with torchrun: runs examples/video2world.py (examples/video2world_lora.py when
the first argument is `--lora_script`) and also saves the decoded video tensor (before H.264 encoding) as
<save_path>.pt."""

from __future__ import annotations

import sys

import torch

from cosmos_predict2.inference import cli
from cosmos_predict2.parallel import end_process


def keep_decoded_video(save_video):
    """Wrap cli.save_video so that the float video it encodes is also written to <path>.pt."""

    def save(path, video_3_T_H_W, fps):
        torch.save(video_3_T_H_W.clone(), f"{path}.pt")
        return save_video(path, video_3_T_H_W, fps)

    return save


if __name__ == "__main__":
    from examples import video2world, video2world_lora

    argv, script = sys.argv[1:], video2world
    if argv[:1] == ["--lora_script"]:
        argv, script = argv[1:], video2world_lora
    cli.save_video = keep_decoded_video(cli.save_video)
    script.main(argv)
    end_process(0)
