"""Adapter export: the diffusers file loaded into diffusers' CosmosTransformer3DModel and the PEFT folder loaded with
PeftModel give the same output as our adapted network (tiny config, fp32)."""

from __future__ import annotations

import pytest
import torch
from test_inference_assets import EMB_DIM, assets, tiny_net  # noqa: F401

from cosmos_predict2.inference import LoraFlags, load_lora_net
from cosmos_predict2.lora import LoraConfigError, set_lora_scale
from cosmos_predict2.lora.export import DIFFUSERS_WEIGHT_NAME, export_diffusers, export_peft, main, read_adapter
from cosmos_predict2.networks.weights import diffusers_config, to_diffusers_state_dict
from testing_support.diffusers_compat import NEAREST_RESIZE_SHIM

CPU = torch.device("cpu")


def _patch_diffusers_torchvision(monkeypatch):
    import diffusers.models.transformers.transformer_cosmos as tc

    monkeypatch.setattr(tc, "transforms", NEAREST_RESIZE_SHIM, raising=False)


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    t = torch.rand(1, 2, generator=g)
    ctx = torch.randn(1, 7, EMB_DIM, generator=g)
    cond = torch.zeros(1, 1, 2, 4, 6)
    cond[:, :, 0] = 1
    return x, t, ctx, cond, torch.zeros(1, 1, 32, 48)


def _diffusers_transformer():
    """Cosmos2VideoToWorldPipeline's transformer (CosmosTransformer3DModel), tiny, from our converted weights."""
    from diffusers import CosmosTransformer3DModel

    base = tiny_net()  # the same weights as assets.dit
    cfg = {k: v for k, v in diffusers_config(base).items() if not k.startswith("_")}
    model = CosmosTransformer3DModel(**cfg)
    model.load_state_dict(to_diffusers_state_dict(base.state_dict()), strict=True)
    for module in model.modules():  # diffusers' q/k RMSNorm eps is 1e-5; the reference's is 1e-6 (docs/reference.md §1)
        if module.__class__.__name__ == "RMSNorm":
            module.eps = 1e-6
    return model.eval()


def _theirs(model, x, t, ctx, cond, padding):
    return model(hidden_states=x, timestep=t[:, None, :, None, None], encoder_hidden_states=ctx,
                 condition_mask=cond, padding_mask=padding, fps=None, return_dict=False)[0]


def test_diffusers_export_matches_our_adapted_network(assets, tmp_path, monkeypatch):  # noqa: F811
    from diffusers import Cosmos2VideoToWorldPipeline
    from diffusers.loaders import CosmosLoraLoaderMixin

    _patch_diffusers_torchvision(monkeypatch)
    ours = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(merge=False)).net
    export_diffusers(assets.adapter, tmp_path)
    model = _diffusers_transformer()
    model.load_lora_adapter(str(tmp_path), weight_name=DIFFUSERS_WEIGHT_NAME, adapter_name="cosmos")
    # diffusers 0.42's Cosmos2VideoToWorldPipeline has no LoRA mixin (no load_lora_weights; docs/guide.md says so);
    # the Cosmos LoRA mixin of the Predict2.5 pipelines is diffusers' pipeline-level loader for this transformer.
    assert not hasattr(Cosmos2VideoToWorldPipeline, "load_lora_weights")

    # load_lora_weights = these two steps (without a pipeline object around the transformer):
    state, metadata = CosmosLoraLoaderMixin.lora_state_dict(str(tmp_path), weight_name=DIFFUSERS_WEIGHT_NAME,
                                                            return_lora_metadata=True)  # fmt: skip
    pipeline_transformer = _diffusers_transformer()
    CosmosLoraLoaderMixin.load_lora_into_transformer(state, transformer=pipeline_transformer, metadata=metadata)
    x, t, ctx, cond, padding = _inputs()
    with torch.no_grad():
        mine = ours(x, t, ctx, cond, padding_mask=padding)
        theirs = _theirs(model, x, t, ctx, cond, padding)
        through_pipeline_loader = _theirs(pipeline_transformer, x, t, ctx, cond, padding)
        set_lora_scale(ours, 0.0)
        without = ours(x, t, ctx, cond, padding_mask=padding)
    assert (mine - without).abs().max() > 1e-2  # the adapter matters, so the comparison tests it
    assert (mine - theirs).abs().max() / theirs.abs().max() < 1e-5  # fp32; the two networks sum in another order
    assert torch.equal(through_pipeline_loader, theirs)

    # And back: the file diffusers itself writes (save_lora_adapter) imports as the same adapter, alpha included.
    model.save_lora_adapter(str(tmp_path / "saved"), adapter_name="cosmos")
    from cosmos_predict2.lora.formats import read_any_adapter

    imported = read_any_adapter(tmp_path / "saved" / DIFFUSERS_WEIGHT_NAME)
    original = read_any_adapter(assets.adapter).adapter
    assert imported.format == "diffusers" and imported.alpha_from == "diffusers lora_adapter_metadata"
    assert (imported.adapter.spec.rank, imported.adapter.spec.alpha) == (4, 8)
    assert all(torch.equal(imported.adapter.weights[k], v) for k, v in original.weights.items())


def test_peft_export_loads_with_peft(assets, tmp_path):  # noqa: F811
    from peft import PeftModel

    ours = load_lora_net(assets.adapter, None, CPU, torch.float32, LoraFlags(merge=False)).net
    folder = export_peft(assets.adapter, tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(tiny_net(), str(folder)).eval()
    x, t, ctx, cond, padding = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x, t, ctx, cond, padding_mask=padding),
                                   ours(x, t, ctx, cond, padding_mask=padding), rtol=1e-6, atol=1e-6)


def test_cli_and_bad_input(assets, tmp_path, capsys):  # noqa: F811
    main([str(assets.adapter), str(tmp_path / "out")])
    assert (tmp_path / "out/peft/adapter_config.json").is_file()
    assert (tmp_path / "out/diffusers" / DIFFUSERS_WEIGHT_NAME).is_file()
    spec, _, weights = read_adapter(assets.adapter)
    assert spec.rank == 4 and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in weights)
    with pytest.raises((ValueError, LoraConfigError), match="not an adapter checkpoint"):
        read_adapter(assets.dit)
