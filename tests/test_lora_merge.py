"""Merging adapters into a base file (`python -m cosmos_predict2.lora merge`) and several adapters at once at
inference (`--lora_path A --lora_path B:0.5`), tiny model on CPU."""

from __future__ import annotations

import pytest
import torch
from test_examples import video2world, video2world_lora  # noqa: F401
from test_inference_assets import assets, build_net_kwargs, common_argv, tiny_net  # noqa: F401
from test_lora_export import _inputs

from cosmos_predict2.inference import LoraFlags, load_base_net, load_lora_net
from cosmos_predict2.inference.model_loading import load_multi_lora_net, parse_lora_paths
from cosmos_predict2.lora import AdapterFile, LoraConfigError, LoraSpec, add_lora, lora_state_dict
from cosmos_predict2.lora.__main__ import main as lora_main
from cosmos_predict2.lora.formats import read_any_adapter, write_adapter

CPU = torch.device("cpu")
Q = "blocks.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def second(assets, tmp_path_factory):  # noqa: F811
    """Another adapter on the same base, of another rank and other targets, as a kohya file (no base record)."""
    spec = LoraSpec(rank=2, alpha=1, target_modules="q_proj,mlp.layer1")
    net = add_lora(tiny_net(), spec)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    path = tmp_path_factory.mktemp("second") / "b.safetensors"
    return write_adapter(AdapterFile(spec, {}, lora_state_dict(net)), "kohya", path)


def _out(net):
    x, t, ctx, cond, padding = _inputs()
    with torch.no_grad():
        return net(x, t, ctx, cond, padding_mask=padding)


def _merge(assets, tmp_path, *adapter_args, dtype="bf16"):  # noqa: F811
    out = tmp_path / f"merged_{dtype}.pt"
    assert lora_main(["merge", *adapter_args, "--base", str(assets.dit), "--out", str(out), "--dtype", dtype]) == 0
    return out


def test_merged_file_is_a_plain_bf16_base_equal_to_base_plus_adapter(assets, tmp_path):  # noqa: F811
    merged_path = _merge(assets, tmp_path, "--adapter", str(assets.adapter), "--scale", "0.8")
    merged = torch.load(merged_path, weights_only=True)
    base = torch.load(assets.dit, weights_only=True)
    assert merged.keys() == base.keys() and {v.dtype for v in merged.values()} == {torch.bfloat16}
    # The formula, computed independently: W + s * alpha / r * B @ A in fp32, rounded once.
    lora = read_any_adapter(assets.adapter).adapter.weights
    expected_q = base[f"net.{Q}.weight"] + 0.8 * 8 / 4 * (lora[f"{Q}.lora_B.default.weight"]
                                                          @ lora[f"{Q}.lora_A.default.weight"])  # fmt: skip
    assert torch.equal(merged[f"net.{Q}.weight"], expected_q.to(torch.bfloat16))
    # PEFT's own merge at inference (bf16 base) rounds twice (the delta to bf16, then the sum); ours rounds the
    # fp32 sum once, so each merged weight is the bf16 value nearest to the exact sum: never farther than PEFT's.
    peft = load_lora_net(assets.adapter, None, CPU, torch.bfloat16, LoraFlags(scale=0.8)).net.state_dict()
    exact_sd = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(scale=0.8)).net.state_dict()
    for k, v in peft.items():
        ours_err, peft_err = (merged["net." + k].float() - exact_sd[k]).abs(), (v.float() - exact_sd[k]).abs()
        assert (ours_err <= peft_err).all(), k

    # The plain inference path (examples/video2world.py, no --use_lora) loads it; its output against the exact
    # function (fp32 base + fp32 adapter, unmerged) differs only by the bf16 rounding of the stored weights: no
    # more than storing the base alone in bf16 costs. bf16 keeps 8 significant bits, so each stored weight is off
    # by up to 2^-9 (0.2%) relative; through the tiny random network that grows to about 1% of the output's
    # range (measured: merged 1.1e-2, the bf16 base alone 0.9e-2).
    plain = load_base_net(merged_path, "tiny", CPU, torch.float32, net_config=build_net_kwargs()).net
    exact_net = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(scale=0.8, merge=False)).net
    exact = _out(exact_net)
    merged_err = ((_out(plain) - exact).abs().max() / exact.abs().max()).item()
    bf16_base = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(scale=0.8, merge=False)).net
    with torch.no_grad():
        for name, p in bf16_base.named_parameters():
            if ".lora_" not in name:
                p.copy_(p.to(torch.bfloat16).float())
    rounding_err = ((_out(bf16_base) - exact).abs().max() / exact.abs().max()).item()
    print(f"merged bf16 vs exact: {merged_err:.2e} relative; bf16 base + fp32 adapter vs exact: {rounding_err:.2e}")
    assert merged_err < 3e-2 and merged_err < 2 * rounding_err


def test_two_adapters_scales_1_0_equal_the_first_and_a_b_equal_their_merge(assets, second, tmp_path):  # noqa: F811
    flags = LoraFlags(merge=False)
    alone = _out(load_lora_net(assets.adapter, None, CPU, torch.float32, flags).net)
    both_1_0 = load_multi_lora_net([(str(assets.adapter), 1.0), (str(second), 0.0)], None, None, CPU, torch.float32,
                                   flags).net  # fmt: skip
    assert torch.equal(_out(both_1_0), alone)
    both = load_multi_lora_net([(str(assets.adapter), 0.8), (str(second), 0.5)], None, None, CPU, torch.float32,
                               flags)  # fmt: skip
    assert "rank 4, alpha 8, scale 0.8" in both.description and "rank 2, alpha 1, scale 0.5" in both.description
    unmerged = _out(both.net)
    assert (unmerged - alone).abs().max() > 1e-2  # the second adapter matters
    merged_path = _merge(assets, tmp_path, "--adapter", str(assets.adapter), "--scale", "0.8",
                         "--adapter", str(second), "--scale", "0.5", dtype="fp32")  # fmt: skip
    from_file = load_base_net(merged_path, "tiny", CPU, torch.float32, net_config=build_net_kwargs()).net
    torch.testing.assert_close(_out(from_file), unmerged, rtol=1e-5, atol=1e-5)  # fp32: merging reorders sums
    merged_at_load = load_multi_lora_net([(str(assets.adapter), 0.8), (str(second), 0.5)], None, None, CPU,
                                         torch.float32, LoraFlags()).net  # fmt: skip
    assert not any(".lora_" in k for k in merged_at_load.state_dict())
    torch.testing.assert_close(_out(merged_at_load), unmerged, rtol=1e-5, atol=1e-5)


def test_adapters_of_different_bases_are_refused(assets, tmp_path):  # noqa: F811
    paths = []
    for i, digest in enumerate(("a" * 64, "b" * 64)):
        adapter = read_any_adapter(assets.adapter).adapter
        adapter.base = {**adapter.base, "sha256": digest}
        paths.append(str(write_adapter(adapter, "ours", tmp_path / f"{i}.pt")))
    with pytest.raises(LoraConfigError, match=r"adapters for different base models: .*0.pt records sha256 aaaa"):
        load_multi_lora_net([(paths[0], 1.0), (paths[1], 1.0)], str(assets.dit), None, CPU, torch.float32,
                            LoraFlags(allow_base_mismatch=True))  # fmt: skip
    assert lora_main(["merge", "--adapter", paths[0], "--adapter", paths[1], "--base", str(assets.dit),
                      "--out", str(tmp_path / "m.pt"), "--allow_base_mismatch"]) == 1  # fmt: skip
    assert not (tmp_path / "m.pt").exists()


def test_lora_path_flags(assets, second, tmp_path):  # noqa: F811
    assert parse_lora_paths(["a.pt:0.8", "b.safetensors"], None) == [("a.pt", 0.8), ("b.safetensors", 1.0)]
    assert parse_lora_paths(["a.pt", "b.pt"], [0.8, 0.5]) == [("a.pt", 0.8), ("b.pt", 0.5)]
    with pytest.raises(LoraConfigError, match="2 --lora_path but 1 --lora_scale"):
        parse_lora_paths(["a.pt", "b.pt"], [0.8])
    with pytest.raises(LoraConfigError, match="either inline"):
        parse_lora_paths(["a.pt:0.5"], [0.8])
    mixed_up = common_argv(assets, tmp_path / "x.mp4", "--lora_path", str(second))
    mixed_up[mixed_up.index("--dit_path") + 1] = str(assets.adapter)
    with pytest.raises(LoraConfigError, match="with --lora_path --dit_path is the base DiT"):
        video2world_lora.main(mixed_up)
    # The example script: --lora_path A --lora_path B:0 generates what --use_lora --dit_path A does.
    single, multi = tmp_path / "single.mp4", tmp_path / "multi.mp4"
    argv = common_argv(assets, single, "--use_lora")
    argv[argv.index("--dit_path") + 1] = str(assets.adapter)
    video2world_lora.main(argv)
    argv = common_argv(assets, multi, "--lora_path", str(assets.adapter), "--lora_path", f"{second}:0")
    # --dit_path stays the base DiT: with --lora_path it names the base (else the adapters' recorded base is used)
    video2world_lora.main(argv)
    assert single.read_bytes() == multi.read_bytes()


def test_merge_streams_from_the_memory_mapped_base(assets, tmp_path, monkeypatch):  # noqa: F811
    """Only the adapted weights are new tensors; every other tensor of a bf16 base goes to the file straight from
    the memory-mapped base (no second copy), and the base's tensors are never written."""
    import cosmos_predict2.io as io

    bf16_base = tmp_path / "base_bf16.pt"
    torch.save({k: v.to(torch.bfloat16) for k, v in torch.load(assets.dit, weights_only=True).items()}, bf16_base)
    seen = {}
    real_load = io.safe_load
    monkeypatch.setattr(io, "safe_load", lambda path, **kw: seen.setdefault(str(path), real_load(path, **kw)))
    monkeypatch.setattr(io, "atomic_torch_save", lambda obj, path: seen.setdefault("out", obj))
    assert lora_main(["merge", "--adapter", str(assets.adapter), "--base", str(bf16_base), "--out", "x.pt"]) == 0
    base, out = seen[str(bf16_base)], seen["out"]
    adapted = {f"net.{k.split('.lora_')[0]}.weight" for k in read_any_adapter(assets.adapter).adapter.weights}
    assert out.keys() == base.keys() and adapted < set(out)
    for key, value in out.items():
        shares = value.untyped_storage().data_ptr() == base[key].untyped_storage().data_ptr()
        assert shares != (key in adapted), key
    pristine = torch.load(bf16_base, weights_only=True)
    assert all(torch.equal(base[k], pristine[k]) for k in adapted)


@pytest.mark.slow
def test_several_adapters_with_context_parallel_equal_one_process(assets, second, tmp_path, monkeypatch):  # noqa: F811
    """--lora_path A --lora_path B:0.5 with --num_gpus 2 (2 gloo ranks, context parallel): each rank mounts both
    adapters and the video equals the one-process run (decoded tensors; fp32, the all-to-all attention's summation
    order only: the CP inference test measured 9.3e-6)."""
    from test_parallel import _torchrun

    from cosmos_predict2.inference import cli
    from tests.cp_inference_worker import keep_decoded_video

    one, two = tmp_path / "one.mp4", tmp_path / "two.mp4"
    argv = common_argv(assets, one, "--lora_path", str(assets.adapter), "--lora_path", f"{second}:0.5")
    argv[argv.index("--num_frames") + 1] = "13"  # 4 latent frames: divisible by 2 ranks
    monkeypatch.setattr(cli, "save_video", keep_decoded_video(cli.save_video))
    video2world_lora.main(argv)
    argv[argv.index("--save_path") + 1] = str(two)
    _torchrun(2, ["tests/cp_inference_worker.py", "--lora_script", *argv, "--num_gpus", "2"])
    a, b = (torch.load(f"{p}.pt", weights_only=True) for p in (one, two))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
    base_only = tmp_path / "base.mp4"  # and the adapters act: the base alone gives another video
    argv = common_argv(assets, base_only)
    argv[argv.index("--num_frames") + 1] = "13"
    video2world.main(argv)
    assert (torch.load(f"{base_only}.pt", weights_only=True) - a).abs().max() > 1e-3
