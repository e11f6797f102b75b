"""Low-memory training modes (docs/memory.md): activation offload, frozen-weight streaming, the memory planner.

Every mode must compute the same loss and gradients as the default one, bit for bit: they only change where
tensors wait between the forward and the backward.
"""

from __future__ import annotations

import pytest
import torch

from cosmos_predict2.configs.model_config import ModelConfigError, parse_model_config
from cosmos_predict2.lora import add_lora
from cosmos_predict2.lora.spec import LoraSpec
from cosmos_predict2.networks import build_net
from cosmos_predict2.networks.weights import randomize_
from cosmos_predict2.training.model import Video2WorldModel, model_config_dict

TINY = dict(crossattn_emb_channels=32)
LORA = LoraSpec(rank=4, alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "output_proj", "mlp.layer1",
                                                  "mlp.layer2"])  # fmt: skip


def _inputs(T: int = 3, H: int = 8, W: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, T, H, W, generator=g)
    t = torch.rand(1, T, generator=g)
    ctx = torch.randn(1, 7, 32, generator=g)
    cond = torch.zeros(1, 1, T, H, W)
    cond[:, :, :1] = 1.0
    return x, t, ctx, cond


def _tiny_net(lora: bool, seed: int = 5, **kwargs):
    net = randomize_(build_net("tiny", **TINY, **kwargs), seed=seed)
    if lora:
        net.requires_grad_(False)
        torch.manual_seed(seed)
        add_lora(net, LORA, adapter_dtype=torch.float32)
        with torch.no_grad():  # PEFT zero-initialises lora_B: make the adapters matter
            for name, p in net.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(hash(name) % 2**31))
    return net


def _loss_and_grads(net) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = net(*_inputs()).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}


def _assert_same(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0]), (a[0], b[0])
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        assert torch.equal(a[1][name], b[1][name]), name


# --- config ----------------------------------------------------------------------------------------------------


def test_memory_mode_config_checks():
    assert parse_model_config(model_config_dict()).memory_mode == "default"
    with pytest.raises(ModelConfigError, match="memory_mode"):
        parse_model_config(model_config_dict(memory_mode="tiny_gpu"))
    with pytest.raises(ModelConfigError, match="activation_checkpointing"):
        parse_model_config(model_config_dict(memory_mode="low", activation_checkpointing="none",
                                             train_architecture="lora"))  # fmt: skip
    with pytest.raises(ModelConfigError, match="train_architecture=lora"):
        parse_model_config(model_config_dict(memory_mode="stream_weights"))


def test_memory_mode_is_a_runtime_net_kwarg_not_recorded_as_the_base():
    cfg = model_config_dict(model_size="tiny", dit_path="", train_architecture="lora", memory_mode="low")
    model = Video2WorldModel(cfg)
    assert model.net_kwargs()["activation_offload"] is True
    default = Video2WorldModel(model_config_dict(model_size="tiny", dit_path="", train_architecture="lora"))
    assert default.net_kwargs()["activation_offload"] is False
    assert model.base_info()["net_config"] == default.base_info()["net_config"]
    assert "activation_offload" not in model.base_info()["net_config"]


# --- activation offload ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ckpt", ["full", "selective"])
@pytest.mark.parametrize("lora", [False, True])
def test_activation_offload_same_loss_and_gradients(ckpt, lora):
    reference = _loss_and_grads(_tiny_net(lora, activation_checkpointing=ckpt))
    net = _tiny_net(lora, activation_checkpointing=ckpt, activation_offload=True)
    net.activation_offload.min_bytes = 4096  # the tiny x is 12 KiB: offload it, keep the small emb/adaLN tensors
    offloaded = _loss_and_grads(net)
    _assert_same(reference, offloaded)
    stats = net.activation_offload.stats
    # one x per block went to the host; block 1's unpack prefetched block 0's x, block 1's own was loaded on demand
    assert stats["offloaded"] == len(net.blocks), stats
    assert stats["prefetched"] == len(net.blocks) - 1 and stats["loaded_on_demand"] == 1, stats


def test_activation_offload_needs_checkpointing():
    with pytest.raises(ValueError, match="activation_checkpointing"):
        build_net("tiny", activation_offload=True)
