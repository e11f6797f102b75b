"""Loading and exporting DiT weights: reference `.pt` files and the diffusers format (docs/reference.md §1 and §8).

Reference files are flat dicts (`net.<name>` for the weights, `net_ema.<name>` for the EMA copy; the released
`model-*.pt` hold EMA weights under `net.`). They are read with `torch.load(weights_only=True, mmap=True)`
and assigned straight into a network built on the meta device, so a 14B model is never allocated twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from cosmos_predict2.io import StateDictMismatchError, atomic_write, atomic_write_text, check_keys, safe_load

IGNORED_PREFIXES = ("pos_embedder.", "accum_")
IGNORED_SUFFIXES = ("._extra_state",)


class CheckpointMismatchError(StateDictMismatchError):
    """A checkpoint does not match the network: missing, unexpected or wrongly shaped keys."""


def extract_prefixed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys under `prefix` with the prefix removed; reference buffers (RoPE tables, accumulators) dropped."""
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.startswith(IGNORED_PREFIXES) or name.endswith(IGNORED_SUFFIXES):
            continue
        out[name] = value
    return out


def check_state_dict(net: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointMismatchError listing every missing, unexpected and wrongly shaped key."""
    expected = net.state_dict()
    unexpected = set(state_dict) - set(expected)
    if any(".base_layer." in k or ".lora_A." in k for k in unexpected):
        hint = "  (this looks like a LoRA checkpoint: use examples/video2world_lora.py --use_lora)"
    elif not set(expected) & set(state_dict):
        hint = "  (no key matched: is this the right model size, and the right prefix 'net.'/'net_ema.'?)"
    else:
        hint = ""
    check_keys(expected, state_dict, source, hint=hint, error=CheckpointMismatchError)


def assign_state_dict(
    net: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Check, then put the tensors into `net` (built on meta or real memory) without a second copy. `device`: each
    tensor is moved (and cast) there one at a time, so a memory-mapped file never becomes a whole second copy in
    host memory (a 14B fp32 cast of the bf16 file would be 57 GB of host RAM)."""
    check_state_dict(net, state_dict, source)
    params = {name: p for name, p in net.named_parameters()}
    converted = {}
    for name, value in state_dict.items():
        target_dtype = dtype or (params[name].dtype if name in params else value.dtype)
        converted[name] = value.to(device=device or value.device, dtype=target_dtype)
    net.load_state_dict(converted, strict=True, assign=True)
    return net


def load_reference_weights(
    net: nn.Module, path: str | Path, prefix: str = "net.", dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Load a reference-format `.pt` (flat dict, `net.`/`net_ema.` keys) into `net`, which may live on meta."""
    state = safe_load(path)
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{path} holds a {type(state).__name__}, expected a flat dict of tensors")
    if "model" in state and isinstance(state["model"], Mapping):  # trainer-style nesting
        state = state["model"]
    sd = extract_prefixed(state, prefix)
    if not sd and prefix == "net." and any(k.startswith("net_ema.") for k in state):
        sd = extract_prefixed(state, "net_ema.")
    return assign_state_dict(net, sd, f"{path} (prefix {prefix!r})", dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------------------
# diffusers format
# ----------------------------------------------------------------------------------------------------------

# (ours, diffusers) substring pairs applied in this order (docs/reference.md §1); the reverse map applies them
# reversed. No tensor is transformed.
DIFFUSERS_RENAMES: list[tuple[str, str]] = [
    ("t_embedder.1", "time_embed.t_embedder"),
    ("t_embedding_norm", "time_embed.norm"),
    ("blocks", "transformer_blocks"),
    ("adaln_modulation_self_attn.1", "norm1.linear_1"),
    ("adaln_modulation_self_attn.2", "norm1.linear_2"),
    ("adaln_modulation_cross_attn.1", "norm2.linear_1"),
    ("adaln_modulation_cross_attn.2", "norm2.linear_2"),
    ("adaln_modulation_mlp.1", "norm3.linear_1"),
    ("adaln_modulation_mlp.2", "norm3.linear_2"),
    ("self_attn", "attn1"),
    ("cross_attn", "attn2"),
    ("q_proj", "to_q"),
    ("k_proj", "to_k"),
    ("v_proj", "to_v"),
    ("output_proj", "to_out.0"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
    ("mlp.layer1", "ff.net.0.proj"),
    ("mlp.layer2", "ff.net.2"),
    ("x_embedder.proj.1", "patch_embed.proj"),
    ("final_layer.adaln_modulation.1", "norm_out.linear_1"),
    ("final_layer.adaln_modulation.2", "norm_out.linear_2"),
    ("final_layer.linear", "proj_out"),
]


def to_diffusers_name(name: str) -> str:
    for ours, theirs in DIFFUSERS_RENAMES:
        name = name.replace(ours, theirs)
    return name


def from_diffusers_name(name: str) -> str:
    for ours, theirs in reversed(DIFFUSERS_RENAMES):
        name = name.replace(theirs, ours)
    return name


def to_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {to_diffusers_name(k): v for k, v in state_dict.items()}


def from_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {from_diffusers_name(k): v for k, v in state_dict.items()}


def diffusers_config(net: nn.Module) -> dict:
    """`CosmosTransformer3DModel` config equivalent to `net` (a MinimalV1LVGDiT)."""
    head_dim = net.model_channels // net.num_heads
    rope = net.pos_embedder
    dim_h, dim_t = rope.dim_h, rope.dim_t
    # Recover the extrapolation ratios from the stored thetas: theta = 1e4 * ratio^(dim/(dim-2)).
    ratio_h = (rope.h_theta / 1e4) ** ((dim_h - 2) / dim_h)
    ratio_w = (rope.w_theta / 1e4) ** ((dim_h - 2) / dim_h)
    ratio_t = (rope.t_theta / 1e4) ** ((dim_t - 2) / dim_t)
    block = net.blocks[0]
    return {
        "_class_name": "CosmosTransformer3DModel",
        "in_channels": net.in_channels,  # latent + condition mask; diffusers adds the padding mask itself
        "out_channels": net.out_channels,
        "num_attention_heads": net.num_heads,
        "attention_head_dim": head_dim,
        "num_layers": len(net.blocks),
        "mlp_ratio": block.mlp.layer1.out_features / net.model_channels,
        "text_embed_dim": block.cross_attn.k_proj.in_features,
        "adaln_lora_dim": block.adaln_modulation_self_attn[1].out_features,
        "max_size": [net.max_frames, net.max_img_h, net.max_img_w],
        "patch_size": [net.patch_temporal, net.patch_spatial, net.patch_spatial],
        "rope_scale": [round(ratio_t, 10), round(ratio_h, 10), round(ratio_w, 10)],
        "concat_padding_mask": net.concat_padding_mask,
        "extra_pos_embed_type": None,
    }


def save_diffusers(net: nn.Module, folder: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write `folder/config.json` + `diffusion_pytorch_model.safetensors`, loadable by diffusers'
    `CosmosTransformer3DModel.from_pretrained(folder)`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in to_diffusers_state_dict(net.state_dict()).items()}
    data = safetensors_bytes(sd, metadata={"format": "pt"})
    atomic_write(folder / "diffusion_pytorch_model.safetensors", lambda f: f.write(data))
    atomic_write_text(folder / "config.json", json.dumps(diffusers_config(net), indent=2))
    return folder


def read_diffusers_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read diffusers weights from a safetensors file, a `transformer/` folder, or a model folder holding one."""
    path = Path(path)
    if path.is_dir() and (path / "transformer").is_dir():
        path = path / "transformer"
    if path.is_file():
        return load_file(str(path))
    if not path.is_dir():
        raise FileNotFoundError(f"diffusers weights not found: {path}")
    index = path / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        sd: dict[str, torch.Tensor] = {}
        for shard in shards:
            sd.update(load_file(str(path / shard)))
        return sd
    single = path / "diffusion_pytorch_model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"{path} has no diffusion_pytorch_model.safetensors (or its .index.json)")
    return load_file(str(single))


def load_diffusers_weights(net: nn.Module, path: str | Path, dtype: torch.dtype | None = None,
                           device: torch.device | str | None = None) -> nn.Module:
    sd = from_diffusers_state_dict(read_diffusers_state_dict(path))
    return assign_state_dict(net, sd, str(path), dtype=dtype, device=device)


def load_dit_weights(
    net: nn.Module, path: str | Path, dtype: torch.dtype | None = None, prefix: str = "net.",
    device: torch.device | str | None = None,
) -> nn.Module:
    """Load either format, chosen by what `path` is (a `.pt` file, or safetensors / a diffusers folder), tensor by
    tensor onto `device` (default: where the file's tensors are, memory-mapped host memory)."""
    path = Path(path)
    if path.suffix in (".pt", ".pth"):
        return load_reference_weights(net, path, prefix=prefix, dtype=dtype, device=device)
    return load_diffusers_weights(net, path, dtype=dtype, device=device)


def randomize_(net: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter with random values (including the normally zero-initialised adaLN layers): for tests
    and benchmarks, where a zero would hide a wrong index.

    The numbers are drawn on the parameters' own device, from a generator on that device: a 2B/14B network
    materialised on a GPU (`to_empty(device="cuda")`) is filled in seconds, where a CPU draw of 14e9 numbers takes
    minutes. On a CPU the values are the same as they have always been for a seed (tests and the demo assets rely
    on it); on a GPU they are the same distribution but other numbers (another generator)."""
    params = list(net.named_parameters())
    if not params:
        return net
    device = params[0][1].device
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in params:
            # Drawn in fp32 whatever the parameter dtype (so bf16 weights get the fp32 values rounded).
            noise = torch.randn(p.shape, generator=g, device=device)
            if name.endswith("norm.weight") or "_norm." in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                # 1/sqrt(fan_in) keeps activations O(1) through the depth, so the comparison is not of near-zeros.
                p.copy_(noise / p.shape[-1] ** 0.5)
    return net


def initialize_weights(net: nn.Module, seed: int = 0) -> nn.Module:
    """Training-from-scratch initialisation (pretraining the tiny demo model): default Linear init, unit norms,
    and zeroed adaLN output layers and final projection so that every block starts as the identity."""
    torch.manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
        elif hasattr(module, "reset_parameters") and not any(True for _ in module.children()):
            module.reset_parameters()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".2.weight") and "adaln_modulation" in name:
                p.zero_()
            if name == "final_layer.linear.weight":
                p.zero_()
    return net
