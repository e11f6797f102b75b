"""Every adapter format in and out (lora/formats.py): exact round trips, auto-detection and its errors, the
reference's whole-network layout, and the ComfyUI / kohya key and alpha rules applied the way those loaders apply
them (neither is installable from PyPI; their rules are quoted from comfy/lora.py, comfy/weight_adapter/lora.py
and musubi-tuner's networks/lora.py). The diffusers client test is in test_lora_export.py."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_inference_assets import assets, tiny_net  # noqa: F401
from test_lora_export import _inputs

from cosmos_predict2.inference import LoraFlags, load_lora_net
from cosmos_predict2.lora import LoraConfigError, LoraSpec, add_lora, set_lora_scale
from cosmos_predict2.lora.__main__ import main as lora_main
from cosmos_predict2.lora.formats import (
    CONFIG_METADATA_KEY,
    FILE_FORMATS,
    FORMAT_NAMES,
    KEY_MAPS,
    infer_targets,
    read_any_adapter,
    write_adapter,
)
from cosmos_predict2.networks import build_net

CPU = torch.device("cpu")
BLOCK0_Q = {  # the issue's table: what each format calls block 0's self-attention q lora_A
    "ours": "net.blocks.0.self_attn.q_proj.lora_A.default.weight",
    "reference": "net.blocks.0.self_attn.q_proj.lora_A.default.weight",
    "diffusers": "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight",
    "peft": "base_model.model.blocks.0.self_attn.q_proj.lora_A.weight",
    "comfyui": "diffusion_model.blocks.0.self_attn.q_proj.lora_A.weight",
    "kohya": "lora_unet_blocks_0_self_attn_q_proj.lora_down.weight",
}


def _written(tmp_path, assets, fmt, **kw):  # noqa: F811
    out = tmp_path / (fmt + FILE_FORMATS.get(fmt, ""))
    write_adapter(read_any_adapter(assets.adapter).adapter, fmt, out, base_path=assets.dit, **kw)
    return out


def _tensor_file(out):
    return next(out.glob("*.safetensors")) if out.is_dir() else out


def _keys(path):
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            return set(f.keys()), f.metadata()
    return set(torch.load(path, weights_only=True)), {}


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_round_trip_is_exact_and_keys_are_each_loaders(fmt, assets, tmp_path):  # noqa: F811
    original = read_any_adapter(assets.adapter).adapter
    out = _written(tmp_path, assets, fmt)
    assert BLOCK0_Q[fmt] in _keys(_tensor_file(out))[0]
    back = read_any_adapter(out, alpha=8 if fmt == "reference" else None)
    assert back.format == fmt
    assert back.adapter.spec == original.spec
    assert back.adapter.weights.keys() == original.weights.keys()
    assert all(torch.equal(back.adapter.weights[k], v) for k, v in original.weights.items())
    if fmt != "reference":  # the reference layout does not record the base; ours and the exports do
        assert back.adapter.base == original.base


@pytest.mark.parametrize("fmt", ["diffusers", "peft", "comfyui", "kohya"])
def test_without_our_metadata_each_format_own_alpha_record_is_read(fmt, assets, tmp_path):  # noqa: F811
    """Files written by other tools carry no lora_config: rank and targets follow from the tensors, alpha from the
    format's own record (diffusers metadata, adapter_config.json, .alpha tensors)."""
    path = _tensor_file(_written(tmp_path, assets, fmt))
    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    meta.pop(CONFIG_METADATA_KEY)
    save_file(tensors, str(path), metadata=meta)
    back = read_any_adapter(path.parent if fmt == "peft" else path)
    assert (back.adapter.spec.rank, back.adapter.spec.alpha) == (4, 8)
    assert back.adapter.spec.target_modules == ["q_proj", "k_proj", "v_proj", "output_proj", "mlp.layer1",
                                                "mlp.layer2"]  # fmt: skip
    assert back.adapter.base == {}
    if fmt in ("comfyui", "kohya"):  # ComfyUI: a missing .alpha means factor 1, i.e. alpha = rank (kohya: same)
        save_file({k: v for k, v in tensors.items() if not k.endswith(".alpha")}, str(path))
        assert read_any_adapter(path).adapter.spec.alpha == 4


def test_inferred_targets_select_exactly_the_adapted_modules():
    net = build_net("tiny", device="meta")
    from cosmos_predict2.lora.adapters import matching_modules

    for targets in (["q_proj", "mlp.layer2"], ["self_attn.v_proj"], ["blocks.1.cross_attn.k_proj"]):
        modules = set(matching_modules(net, targets))
        assert set(matching_modules(net, infer_targets(modules))) == modules


def test_detection_errors_name_the_format(assets, tmp_path):  # noqa: F811
    with pytest.raises(LoraConfigError, match="holds no LoRA tensors"):
        read_any_adapter(assets.dit)
    wan_like = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 8),
                "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(8, 4)}  # Wan2.1's names
    save_file(wan_like, str(tmp_path / "wan.safetensors"))
    with pytest.raises(LoraConfigError, match=r"looks like a ComfyUI / diffusion-pipe LoRA but adapts modules"):
        read_any_adapter(tmp_path / "wan.safetensors")
    mixed = {BLOCK0_Q["comfyui"]: torch.zeros(4, 8), BLOCK0_Q["kohya"]: torch.zeros(4, 8)}
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(LoraConfigError, match=r"cannot tell the adapter format .*1 of 2 LoRA keys look like"):
        read_any_adapter(tmp_path / "mixed.safetensors")
    save_file({"unet.down.0.lora_A.weight": torch.zeros(4, 8)}, str(tmp_path / "unknown.safetensors"))
    with pytest.raises(LoraConfigError, match="no key follows a known format's names, e.g. 'unet.down.0.lora_A"):
        read_any_adapter(tmp_path / "unknown.safetensors")
    with pytest.raises(LoraConfigError, match="does not record lora_alpha: pass --alpha"):
        read_any_adapter(assets.reference_lora)


def test_reference_layout_key_set_and_output(assets, tmp_path):  # noqa: F811
    """Our reference-format export is the reference's checkpoint: the PEFT-injected network's state dict under
    net.* (and net_ema.* with EMA), accepted by the reference-format loader with the adapter's output."""
    adapter = read_any_adapter(assets.adapter).adapter
    adapter.ema = {k: v * 0.5 for k, v in adapter.weights.items()}
    write_adapter(adapter, "reference", tmp_path / "ref.pt", base_path=assets.dit)
    keys = set(torch.load(tmp_path / "ref.pt", weights_only=True))
    injected = set(add_lora(build_net("tiny", device="meta", crossattn_emb_channels=32), adapter.spec).state_dict())
    assert keys == {"net." + k for k in injected} | {"net_ema." + k for k in injected}
    assert "net.blocks.0.self_attn.q_proj.base_layer.weight" in keys

    ours = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(merge=False, load_ema=False)).net
    ref = load_lora_net(tmp_path / "ref.pt", "tiny", CPU, torch.float32, LoraFlags(alpha=8, merge=False),
                        net_config=assets_net_config()).net  # fmt: skip
    x, t, ctx, cond, padding = _inputs()
    with torch.no_grad():
        assert torch.equal(ref(x, t, ctx, cond, padding_mask=padding), ours(x, t, ctx, cond, padding_mask=padding))


def assets_net_config():
    from test_inference_assets import build_net_kwargs

    return build_net_kwargs()


# ComfyUI's rules (comfy/lora.py model_lora_keys_unet + load_lora; comfy/weight_adapter/lora.py calculate_weight),
# written here as plain functions over a state dict: each diffusion_model.<k>.weight is reachable as
# "lora_unet_" + k with "." -> "_" and as "diffusion_model." + k; the pair is {x}.lora_up/.lora_down or
# {x}.lora_B/.lora_A; alpha = {x}.alpha.item() or None; factor = alpha / lora_A.shape[0] (1 without alpha);
# weight += strength * factor * (up @ down). Keys no rule consumes are "lora key not loaded".
def comfyui_apply(model_sd: dict, lora: dict, strength: float = 1.0) -> tuple[dict, set]:
    key_map = {}
    for k in model_sd:
        if k.startswith("diffusion_model.") and k.endswith(".weight"):
            body = k[len("diffusion_model."):-len(".weight")]
            key_map["lora_unet_" + body.replace(".", "_")] = k
            key_map[k[:-len(".weight")]] = k
    out, loaded = dict(model_sd), set()
    for x, target in key_map.items():
        alpha = lora[f"{x}.alpha"].item() if f"{x}.alpha" in lora else None
        pairs = ((f"{x}.lora_up.weight", f"{x}.lora_down.weight"), (f"{x}.lora_B.weight", f"{x}.lora_A.weight"))
        for up, down in pairs:
            if up in lora:
                factor = alpha / lora[down].shape[0] if alpha is not None else 1.0
                out[target] = out[target] + strength * factor * (lora[up].float() @ lora[down].float())
                loaded |= {up, down} | ({f"{x}.alpha"} if alpha is not None else set())
    return out, set(lora) - loaded


# musubi-tuner's rules (networks/lora.py): for each Linear module of the network, lora_name = "lora_unet_" +
# name.replace(".", "_"); scale = alpha / lora_dim with alpha = lora_dim when missing or 0.
def musubi_apply(net: torch.nn.Module, lora: dict, multiplier: float = 1.0) -> dict:
    sd = net.state_dict()
    for name, module in net.named_modules():
        lora_name = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, torch.nn.Linear) and f"{lora_name}.lora_down.weight" in lora:
            down, up = lora[f"{lora_name}.lora_down.weight"], lora[f"{lora_name}.lora_up.weight"]
            alpha = float(lora.get(f"{lora_name}.alpha", torch.tensor(0.0))) or down.shape[0]
            sd[f"{name}.weight"] = sd[f"{name}.weight"] + multiplier * (up @ down) * (alpha / down.shape[0])
    return sd


def test_comfyui_and_kohya_files_applied_by_their_loaders_rules_match_ours(assets, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    ours = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(merge=False)).net
    set_lora_scale(ours, 0.7)
    x, t, ctx, cond, padding = _inputs()
    with torch.no_grad():
        expected = ours(x, t, ctx, cond, padding_mask=padding)
        assert (expected - tiny_net()(x, t, ctx, cond, padding_mask=padding)).abs().max() > 1e-2  # it matters
    comfy_model = {"diffusion_model." + k: v for k, v in tiny_net().state_dict().items()}
    for fmt in ("comfyui", "kohya"):
        lora = load_file(str(_written(tmp_path, assets, fmt)))
        patched, not_loaded = comfyui_apply(comfy_model, lora, strength=0.7)
        assert not not_loaded, f"ComfyUI would warn 'lora key not loaded' for {sorted(not_loaded)[:3]}"
        net = tiny_net()
        net.load_state_dict({k[len("diffusion_model."):]: v for k, v in patched.items()})
        with torch.no_grad():
            torch.testing.assert_close(net(x, t, ctx, cond, padding_mask=padding), expected, rtol=1e-5, atol=1e-5)
    net = tiny_net()
    net.load_state_dict(musubi_apply(tiny_net(), load_file(str(_written(tmp_path, assets, "kohya"))), 0.7))
    with torch.no_grad():  # fp32: merging reorders the sums, so not bit-equal
        torch.testing.assert_close(net(x, t, ctx, cond, padding_mask=padding), expected, rtol=1e-5, atol=1e-5)


def test_kohya_names_invert_for_every_module_of_the_2b_network():
    kohya = KEY_MAPS["kohya"]
    for name, module in build_net("2B", device="meta").named_modules():
        if isinstance(module, torch.nn.Linear):
            assert kohya.parse(kohya.key(name, "A")) == (name, "A")


@pytest.mark.parametrize("size,rank,expected_mb", [("2B", 16, 45.9), ("14B", 32, 287.8)])
def test_inference_only_export_size_from_the_real_configs(size, rank, expected_mb):
    """One set of adapters in bf16, no optimizer state: the file's tensor bytes, counted on the meta device."""
    net = add_lora(build_net(size, device="meta"), LoraSpec(rank, rank))
    nbytes = sum(p.numel() * 2 for n, p in net.named_parameters() if ".lora_" in n)
    assert round(nbytes / 1e6, 1) == expected_mb


def test_cli_export_import_inspect(assets, tmp_path, capsys):  # noqa: F811
    assert lora_main(["export", str(assets.adapter), "--format", "all", "--base", str(assets.dit),
                      "--out", str(tmp_path / "all")]) == 0  # fmt: skip
    assert {p.name for p in (tmp_path / "all").iterdir()} == {f + FILE_FORMATS.get(f, "") for f in FORMAT_NAMES}
    assert lora_main(["export", str(assets.adapter), "--format", "ours", "--inference_only",
                      "--out", str(tmp_path / "small.pt")]) == 0  # fmt: skip
    small = torch.load(tmp_path / "small.pt", weights_only=True)
    tensors = [v for k, v in small.items() if k != "lora_config"]
    assert all(k.startswith("net.") for k in small if k != "lora_config") and len(tensors) == 40
    assert {v.dtype for v in tensors} == {torch.bfloat16}
    kohya = tmp_path / "all" / "kohya.safetensors"
    assert lora_main(["import", str(kohya), "--base", str(assets.dit), "--model_size", "tiny",
                      "--out", str(tmp_path / "imported.pt")]) == 0  # fmt: skip
    imported = read_any_adapter(tmp_path / "imported.pt").adapter
    assert imported.base["sha256"] and imported.base["dit_path"] == str(assets.dit)
    capsys.readouterr()
    assert lora_main(["inspect", str(tmp_path / "all" / "comfyui.safetensors")]) == 0
    text = capsys.readouterr().out
    for line in ("format:      comfyui", "rank/alpha:  4 / 8", "tensors:     40 (", "EMA:         absent",
                 "base model:  tiny"):  # fmt: skip
        assert line in text
    assert lora_main(["inspect", str(assets.dit)]) == 1
    assert "holds no LoRA tensors" in capsys.readouterr().err
    meta = json.loads(_keys(kohya)[1][CONFIG_METADATA_KEY])
    assert meta["rank"] == 4 and _keys(kohya)[1]["ss_network_alpha"] == "8"
