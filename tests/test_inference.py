"""Generation pipeline pieces on CPU with tiny models: conditioning inputs, seeds, guidance, LoRA loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_inference_assets import EMB_DIM, NUM_FRAMES, SIZE_HW, assets, frames  # noqa: F401

from cosmos_predict2.data.video import write_video
from cosmos_predict2.inference import (
    InferenceInputError,
    LoraFlags,
    Video2WorldPipeline,
    build_input_video,
    load_base_net,
    load_conditioning_frames,
    load_lora_net,
    video_size_hw,
)
from cosmos_predict2.inference.defaults import DEFAULT_NEGATIVE_PROMPT, parse_size
from cosmos_predict2.lora import LoraConfigError
from cosmos_predict2.tokenizers import WanVAETokenizer

CPU = torch.device("cpu")


def test_resolution_table_and_bad_choices():
    assert video_size_hw("720", "16:9") == (704, 1280)
    assert video_size_hw("480", "16:9") == (432, 768)
    assert video_size_hw("480", "9:16") == (768, 432)
    with pytest.raises(ValueError, match="--resolution"):
        video_size_hw("1080", "16:9")
    with pytest.raises(ValueError, match="--aspect_ratio"):
        video_size_hw("720", "2:1")
    with pytest.raises(ValueError, match="multiples of 16"):
        parse_size("60x32")
    assert DEFAULT_NEGATIVE_PROMPT.startswith("The video captures a series of frames showing ugly scenes")


def test_image_conditioning_cover_crop_and_padding(assets):  # noqa: F811
    frames_3_n_H_W, is_image = load_conditioning_frames(assets.image, 5, SIZE_HW)
    assert is_image and frames_3_n_H_W.shape == (3, 1, *SIZE_HW) and frames_3_n_H_W.dtype == torch.uint8
    video = build_input_video(frames_3_n_H_W, NUM_FRAMES, is_image)
    assert video.shape == (1, 3, NUM_FRAMES, *SIZE_HW)
    assert torch.equal(video[0, :, 0], frames_3_n_H_W[:, 0]) and video[0, :, 1:].max() == 0  # then black frames


@pytest.mark.parametrize("n", [1, 5])
def test_video_conditioning_takes_last_frames(tmp_path, n):
    # 12 frames, each a flat grey level 20*t, so the decoded frame index is recoverable after H.264 coding.
    flat = np.stack([np.full((32, 64, 3), 20 * t, np.uint8) for t in range(12)])
    path = tmp_path / "flat.mp4"
    write_video(path, flat, fps=16)
    frames_3_n_H_W, is_image = load_conditioning_frames(path, n, SIZE_HW)
    assert not is_image and frames_3_n_H_W.shape == (3, n, *SIZE_HW)
    levels = [round(frames_3_n_H_W[:, i].float().mean().item() / 20) for i in range(n)]
    assert levels == list(range(12 - n, 12))
    video = build_input_video(frames_3_n_H_W, NUM_FRAMES, is_image)
    assert torch.equal(video[0, :, -1], frames_3_n_H_W[:, -1])  # padded by repeating the last frame


def test_bad_inputs(assets, tmp_path):  # noqa: F811
    with pytest.raises(InferenceInputError, match="not found"):
        load_conditioning_frames(tmp_path / "missing.png", 1, SIZE_HW)
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(InferenceInputError, match="unsupported input type '.gif'"):
        load_conditioning_frames(tmp_path / "clip.gif", 1, SIZE_HW)
    with pytest.raises(InferenceInputError, match="has 3 frame"):
        load_conditioning_frames(assets.short_video, 5, SIZE_HW)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(InferenceInputError, match="cannot read image"):
        load_conditioning_frames(broken, 1, SIZE_HW)


_ASSETS = {}  # filled by the base_pipe fixture: the tiny VAE folder and input image shared by these tests


def _pipeline(net) -> Video2WorldPipeline:
    tokenizer = WanVAETokenizer.from_pretrained(_ASSETS["vae"], device=CPU)
    return Video2WorldPipeline(net, tokenizer, device=CPU, log=lambda _: None)


def _embs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 512, EMB_DIM, generator=g), torch.randn(1, 512, EMB_DIM, generator=g)


def _generate(pipe, guidance=7.0, seed=0, **kw):
    cond, neg = _embs()
    return pipe.generate(
        input_path=str(_ASSETS["image"]), size_hw=SIZE_HW, num_frames=NUM_FRAMES, prompt_embedding_1_L_D=cond,
        negative_embedding_1_L_D=neg, guidance=guidance, seed=seed, num_steps=3, **kw,
    )


@pytest.fixture(scope="module")
def base_pipe(assets):  # noqa: F811
    _ASSETS.update(vae=assets.vae, image=assets.image)
    return _pipeline(load_base_net(assets.dit, "tiny", CPU, torch.float32).net)


def test_seed_reproducibility_and_guidance_paths(base_pipe):
    a, b = _generate(base_pipe, seed=0), _generate(base_pipe, seed=0)
    assert a.shape == (3, NUM_FRAMES, *SIZE_HW) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, _generate(base_pipe, seed=1))
    base_pipe.batched_guidance = False
    try:
        sequential = _generate(base_pipe, seed=0)
    finally:
        base_pipe.batched_guidance = True
    torch.testing.assert_close(sequential, a, rtol=1e-4, atol=1e-4)  # same math, batch of 2 vs two batches of 1
    base_pipe.share_guidance_input = False
    try:
        unshared = _generate(base_pipe, seed=0)
    finally:
        base_pipe.share_guidance_input = True
    torch.testing.assert_close(unshared, a, rtol=1e-4, atol=1e-4)  # first layers once per sample vs per branch
    assert not torch.allclose(_generate(base_pipe, guidance=0.0), a, atol=1e-3)


def test_guidance_batch_out_of_memory_falls_back_to_one_branch_at_a_time(assets):  # noqa: F811
    """A batch-2 guidance forward that runs out of GPU memory (14B at 720p on a 48 GB card) is not fatal: that
    step and every later one run the branches in turn, the video equals --sequential_guidance's, and the user is
    told once."""
    _ASSETS.update(vae=assets.vae, image=assets.image)
    net = load_base_net(assets.dit, "tiny", CPU, torch.float32).net
    messages, batch_sizes = [], []
    forward = net.forward

    def forward_without_room_for_two(x_B_C_T_H_W, *args, **kwargs):
        batch_sizes.append(x_B_C_T_H_W.shape[0])
        if x_B_C_T_H_W.shape[0] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.50 GiB")
        return forward(x_B_C_T_H_W, *args, **kwargs)

    sequential_pipe = _pipeline(net)
    sequential_pipe.batched_guidance = False
    expected = _generate(sequential_pipe)
    pipe = _pipeline(net)
    pipe.log = messages.append
    net.forward = forward_without_room_for_two
    try:
        got = _generate(pipe)
        again = _generate(pipe)
    finally:
        del net.forward
    assert torch.equal(got, expected) and torch.equal(again, expected)
    assert batch_sizes == [2] + [1] * (len(batch_sizes) - 1)  # one failed batched call, then never again
    assert [m for m in messages if "did not fit" in m] == [
        "both guidance branches in one batch did not fit in GPU memory: running them one after the other (the same "
        "video, about half the activation memory; --sequential_guidance starts that way)"]
    assert pipe.batched_guidance is False


def test_sample_latents_keeps_conditioning_frames(base_pipe):
    gt = torch.randn(1, 16, 3, 4, 8)
    cond, neg = _embs()
    for n_latent in (1, 2):
        out = base_pipe.sample_latents(gt, n_latent, cond, neg, 7.0, 0, 2)
        torch.testing.assert_close(out[:, :, :n_latent], gt[:, :, :n_latent])
        assert not torch.allclose(out[:, :, n_latent:], gt[:, :, n_latent:])


def test_empty_negative_prompt_is_explained(base_pipe):
    messages = []
    base_pipe.log = messages.append
    emb = base_pipe.negative_embedding("", torch.ones(1, 4, EMB_DIM))
    base_pipe.log = lambda _: None
    assert torch.equal(emb, torch.zeros(1, 4, EMB_DIM))
    assert "all-zero text embedding" in messages[0] and "--guidance 0" in messages[0]


def test_lora_zero_b_and_scale_zero_give_base_exactly(assets, base_pipe):  # noqa: F811
    base = _generate(base_pipe)
    zero_b = load_lora_net(assets.adapter_zero_b, None, CPU, torch.float32, LoraFlags())
    assert zero_b.lora_spec.rank == 4 and zero_b.lora_spec.alpha == 8  # read from the file, no flags needed
    assert torch.equal(_generate(_pipeline(zero_b.net)), base)
    scale0 = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(scale=0.0))
    assert torch.equal(_generate(_pipeline(scale0.net)), base)
    trained = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags())
    assert (_generate(_pipeline(trained.net)) - base).abs().max() > 1e-3


def test_reference_lora_checkpoint_matches_adapter_checkpoint(assets):  # noqa: F811
    ours = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags()).net
    ref = load_lora_net(assets.reference_lora, "tiny", CPU, torch.float32, LoraFlags(alpha=8)).net
    x, t = torch.randn(1, 16, 2, 4, 4), torch.rand(1, 2)
    emb = torch.randn(1, 7, EMB_DIM)
    with torch.no_grad():
        torch.testing.assert_close(ref(x, t, emb), ours(x, t, emb), rtol=0, atol=0)
    with pytest.raises(LoraConfigError, match="--lora_alpha"):
        load_lora_net(assets.reference_lora, "tiny", CPU, torch.float32, LoraFlags())


@pytest.mark.parametrize(
    "flags, message",
    [
        (LoraFlags(rank=16), "--lora_rank 16 but the adapter was trained with rank 4"),
        (LoraFlags(alpha=16), "--lora_alpha 16 but the adapter was trained with alpha 8"),
        (LoraFlags(target_modules="q_proj,v_proj"), "--lora_target_modules"),
    ],
)
def test_lora_flag_mismatch_errors(assets, flags, message):  # noqa: F811
    with pytest.raises(LoraConfigError, match=message):
        load_lora_net(assets.adapter, None, CPU, torch.float32, flags)


def test_lora_flags_equal_to_recorded_are_accepted(assets):  # noqa: F811
    flags = LoraFlags(rank=4, alpha=8, target_modules="q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2")
    assert load_lora_net(assets.adapter, None, CPU, torch.float32, flags).lora_spec.rank == 4


def test_lora_checkpoint_to_base_loader_and_base_to_lora_loader(assets):  # noqa: F811
    for ckpt in (assets.adapter, assets.reference_lora):
        with pytest.raises(LoraConfigError, match="video2world_lora.py --use_lora"):
            load_base_net(ckpt, "tiny", CPU, torch.float32)
    with pytest.raises(Exception, match="holds no LoRA adapters"):
        load_lora_net(assets.dit, "tiny", CPU, torch.float32, LoraFlags())
    with pytest.raises(FileNotFoundError, match="--base_dit_path"):
        load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(base_dit_path=str(assets.root / "x.pt")))
    with pytest.raises(LoraConfigError, match="trained on the tiny model"):
        load_lora_net(assets.adapter, "2B", CPU, torch.float32, LoraFlags())
