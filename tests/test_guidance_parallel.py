"""Classifier-free-guidance parallelism: one guidance branch per half of the processes (CPU, gloo)."""

from __future__ import annotations

import pytest
import torch
from test_inference_assets import assets, common_argv  # noqa: F401
from test_parallel import _torchrun

from cosmos_predict2.diffusion.sampler import guided_x0_fn


class _Partner:
    """A stand-in for the exchange: records this rank's branch output, returns the partner's from a table."""

    def __init__(self, branch: int, partner_output: torch.Tensor) -> None:
        self.branch, self.partner_output, self.sent = branch, partner_output, None

    def exchange(self, mine):
        self.sent = mine
        return (mine, self.partner_output) if self.branch == 0 else (self.partner_output, mine)


def test_each_rank_computes_its_branch_and_combines_both():
    cond, uncond = torch.full((1, 4, 3), 1.0), torch.full((1, 4, 3), 2.0)
    x = torch.randn(2, 16, 1, 2, 2)

    def denoise(x_B, sigma_B, emb_B_L_D):
        return x_B * emb_B_L_D[:, 0, 0].view(-1, 1, 1, 1, 1)  # a different output per text

    expected = guided_x0_fn(denoise, cond, uncond, guidance=7.0, batched=False)(x, torch.tensor(0.5))
    for branch in (0, 1):
        other = denoise(x, None, (uncond if branch == 0 else cond).expand(2, -1, -1))
        partner = _Partner(branch, other)
        got = guided_x0_fn(denoise, cond, uncond, guidance=7.0, branch_parallel=partner)(x, torch.tensor(0.5))
        torch.testing.assert_close(partner.sent, denoise(x, None, (cond, uncond)[branch].expand(2, -1, -1)))
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("flags", [["--num_gpus", "3"], ["--num_gpus", "1"], ["--num_gpus", "2", "--guidance", "0"]])
def test_guidance_parallel_needs_an_even_number_of_gpus_and_guidance(assets, tmp_path, flags):  # noqa: F811
    from cosmos_predict2.inference import cli
    from examples import video2world

    argv = common_argv(assets, tmp_path / "out.mp4") + ["--guidance_parallel", *flags]
    with pytest.raises(cli.InferenceInputError, match="--guidance_parallel needs an even --num_gpus"):
        video2world.main(argv)


@pytest.mark.slow
def test_two_processes_one_branch_each_equal_one_process(assets, tmp_path, monkeypatch):  # noqa: F811
    """2 gloo ranks with --guidance_parallel against one process running the branches one after the other
    (--sequential_guidance: the same batch-1 forwards): the decoded videos agree to fp32 rounding."""
    from cosmos_predict2.inference import cli
    from examples import video2world
    from tests.cp_inference_worker import keep_decoded_video

    one, two = tmp_path / "one.mp4", tmp_path / "two.mp4"
    argv = common_argv(assets, one)
    monkeypatch.setattr(cli, "save_video", keep_decoded_video(cli.save_video))
    video2world.main([*argv, "--sequential_guidance"])
    argv[argv.index("--save_path") + 1] = str(two)
    _torchrun(2, ["tests/cp_inference_worker.py", *argv, "--num_gpus", "2", "--guidance_parallel"])
    a, b = (torch.load(f"{p}.pt", weights_only=True) for p in (one, two))
    assert a.abs().max() > 0.05  # a real video, not zeros
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
