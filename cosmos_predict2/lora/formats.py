"""Every adapter format in and out, from one table of key maps (`KEY_MAPS`); PEFT-free.

An adapted Linear layer `blocks.0.self_attn.q_proj` (our module names are the reference's, docs/reference.md §1)
appears in each format as (what each consumer's loader reads, checked against their code):

| format    | lora_A / lora_down key of block 0 self-attn q                       | alpha                          |
|-----------|---------------------------------------------------------------------|--------------------------------|
| ours      | net.blocks.0.self_attn.q_proj.lora_A.default.weight                 | `lora_config` in the file      |
| reference | the same, next to net.blocks.0.self_attn.q_proj.base_layer.weight   | not stored                     |
| diffusers | transformer.transformer_blocks.0.attn1.to_q.lora_A.weight           | `lora_adapter_metadata` json   |
| peft      | base_model.model.blocks.0.self_attn.q_proj.lora_A.weight            | adapter_config.json            |
| comfyui   | diffusion_model.blocks.0.self_attn.q_proj.lora_A.weight             | `...q_proj.alpha` tensor       |
| kohya     | lora_unet_blocks_0_self_attn_q_proj.lora_down.weight                | `...q_proj.alpha` tensor       |

- diffusers `PeftAdapterMixin.load_lora_adapter(prefix="transformer")` strips `transformer.`, reads rank from
  lora_B's shape and the LoraConfig (r, lora_alpha, target_modules) from the metadata; without metadata alpha = r.
- ComfyUI `comfy/lora.py: model_lora_keys_unet` maps `diffusion_model.<name>` and `lora_unet_<name with _>` to the
  weight `diffusion_model.<name>.weight` of its Cosmos-Predict2 model (the reference's names);
  `comfy/weight_adapter/lora.py` adds `strength * alpha / rank * (lora_B @ lora_A)` with rank = lora_A.shape[0]
  and the factor 1 when `.alpha` is absent (so absent means alpha = rank).
- kohya / musubi-tuner `networks/lora.py`: `lora_name = "lora_unet_" + module name with "." -> "_"`, buffers
  `lora_down` [r, in], `lora_up` [out, r], `alpha` (scale alpha / r; a missing or 0 alpha means alpha = r).
- The reference (`examples/video2world_lora.py`) injects PEFT into the network, then loads the whole checkpoint
  with `load_state_dict(strict=False)`: `net.<module>.base_layer.weight`, `.lora_A.default.weight`,
  `.lora_B.default.weight`, other weights as `net.<name>`; EMA under `net_ema.*`. Alpha is not recorded.

The safetensors files we write (diffusers, comfyui, kohya) also carry our `lora_config` (json, metadata key
`cosmos_predict2.lora_config`), so an export read back is the original exactly: spec, base record and tensors.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from cosmos_predict2.lora.files import NET, NET_EMA, AdapterFile, is_adapter_checkpoint
from cosmos_predict2.lora.spec import ADAPTER_FORMAT, ADAPTER_NAME, VALID_TARGETS, LoraConfigError, LoraSpec
from cosmos_predict2.networks.weights import from_diffusers_name, to_diffusers_name

CONFIG_METADATA_KEY = "cosmos_predict2.lora_config"  # our lora_config in the safetensors metadata
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
PEFT_WEIGHT_NAME = "adapter_model.safetensors"
PEFT_CONFIG_NAME = "adapter_config.json"


def _same(name: str) -> str:
    return name


def _to_kohya(name: str) -> str:
    return name.replace(".", "_")


@functools.cache
def _underscore_components() -> tuple[str, ...]:
    """Module-name components of the DiT that contain "_" (self_attn, q_proj, ...), longest first: kohya names
    replace every "." by "_", so the inverse re-joins these."""
    from cosmos_predict2.networks import build_net

    parts = {p for name, _ in build_net("tiny", device="meta").named_modules() for p in name.split(".") if "_" in p}
    return tuple(sorted(parts, key=len, reverse=True))


def _from_kohya(body: str) -> str:
    out, rest = [], body
    while rest:
        known = next((c for c in _underscore_components() if rest == c or rest.startswith(c + "_")), None)
        token = known or rest.split("_", 1)[0]
        out.append(token)
        rest = rest[len(token) + 1:]
    return ".".join(out)


@dataclass(frozen=True)
class KeyMap:
    """How one format names the adapter tensors of one of our modules: prefix + renamed module + suffix."""

    name: str
    title: str
    prefix: str
    a_suffix: str  # lora_A (down): [r, in]
    b_suffix: str  # lora_B (up): [out, r]
    alpha_suffix: str | None  # a per-module alpha tensor, or None when alpha lives elsewhere
    module_to: Callable[[str], str] = _same
    module_from: Callable[[str], str] = _same

    def key(self, module: str, part: str) -> str:
        suffix = {"A": self.a_suffix, "B": self.b_suffix, "alpha": self.alpha_suffix}[part]
        return self.prefix + self.module_to(module) + suffix

    def parse(self, key: str) -> tuple[str, str] | None:
        """(our module name, "A" | "B" | "alpha") of one of this format's keys; None for any other key."""
        if not key.startswith(self.prefix):
            return None
        for part, suffix in (("A", self.a_suffix), ("B", self.b_suffix), ("alpha", self.alpha_suffix)):
            if suffix and key.endswith(suffix):
                return self.module_from(key[len(self.prefix):-len(suffix)]), part
        return None


_PEFT_A, _PEFT_B = f".lora_A.{ADAPTER_NAME}.weight", f".lora_B.{ADAPTER_NAME}.weight"
KEY_MAPS: dict[str, KeyMap] = {m.name: m for m in (
    KeyMap("ours", "this toolkit's adapter checkpoint", NET, _PEFT_A, _PEFT_B, None),
    KeyMap("reference", "NVIDIA reference LoRA training checkpoint", NET, _PEFT_A, _PEFT_B, None),
    KeyMap("diffusers", "diffusers CosmosTransformer3DModel LoRA", "transformer.", ".lora_A.weight", ".lora_B.weight",
           None, to_diffusers_name, from_diffusers_name),
    KeyMap("peft", "PEFT adapter folder", "base_model.model.", ".lora_A.weight", ".lora_B.weight", None),
    KeyMap("comfyui", "ComfyUI / diffusion-pipe LoRA", "diffusion_model.", ".lora_A.weight", ".lora_B.weight",
           ".alpha"),
    KeyMap("kohya", "kohya / musubi-tuner LoRA", "lora_unet_", ".lora_down.weight", ".lora_up.weight", ".alpha",
           _to_kohya, _from_kohya),
)}  # fmt: skip
FORMAT_NAMES = tuple(KEY_MAPS)
_OURS = KEY_MAPS["ours"]


def module_of(our_key: str) -> str:
    """`blocks.0.self_attn.q_proj.lora_A.default.weight` -> `blocks.0.self_attn.q_proj`."""
    return our_key.split(".lora_", 1)[0]


def to_format_keys(fmt: str, weights: Mapping[str, torch.Tensor], spec: LoraSpec) -> dict[str, torch.Tensor]:
    """Adapter tensors keyed as in our adapted network (`<module>.lora_A.default.weight`) -> the format's keys,
    with a per-module alpha tensor where the format has one."""
    km = KEY_MAPS[fmt]
    out = {}
    for key, value in weights.items():
        module = module_of(key)
        out[km.key(module, "A" if ".lora_A." in key else "B")] = value
        if km.alpha_suffix:
            out[km.key(module, "alpha")] = torch.tensor(float(spec.alpha))
    return out


def from_format_keys(fmt: str, tensors: Mapping[str, torch.Tensor], source: str,
                     ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The inverse: (weights under our keys, {module: alpha} for formats with alpha tensors). Keys of the format
    that are not adapter tensors are an error naming them (a file for another model, or another adapter type)."""
    km = KEY_MAPS[fmt]
    weights, alphas, foreign = {}, {}, []
    for key, value in tensors.items():
        parsed = km.parse(key)
        if parsed is None:
            foreign.append(key)
            continue
        module, part = parsed
        if part == "alpha":
            alphas[module] = float(value.item())
        else:
            weights[_OURS.key(module, part)[len(NET):]] = value
    if foreign:
        raise LoraConfigError(f"{source}: {len(foreign)} keys are not {km.title} adapter tensors of this DiT, e.g. "
                              f"{foreign[:3]} (LoHa/LoKr/DoRA and other models' LoRAs are not supported)")
    bad = sorted({module_of(k) for k in weights if not any(module_of(k).endswith("." + t) for t in VALID_TARGETS)})
    if bad:
        raise LoraConfigError(f"{source}: looks like a {km.title} but adapts modules this DiT does not have or "
                              f"cannot adapt: {bad[:3]} (valid: Linear layers named {', '.join(VALID_TARGETS)})")
    return weights, alphas


# ----------------------------------------------------------------------------------------------------------
# detection
# ----------------------------------------------------------------------------------------------------------


def detect_format(state: Mapping, source: str) -> str:
    """Which format a flat dict of tensors is in; an error naming the candidates when it cannot tell."""
    if is_adapter_checkpoint(state):
        return "ours"
    keys = [k for k in state if isinstance(k, str)]
    lora_keys = [k for k in keys if ".lora_" in k or k.endswith(".alpha")]
    if not lora_keys:
        raise LoraConfigError(f"{source} holds no LoRA tensors (no lora_A/lora_B/lora_down/lora_up keys): "
                              "is it a base checkpoint?")  # fmt: skip
    if any(k.startswith(NET) and ".base_layer." in k for k in keys):
        return "reference"
    candidates = [m.name for m in KEY_MAPS.values() if m.name not in ("ours", "reference")
                  and all(m.parse(k) is not None for k in lora_keys)]  # fmt: skip
    if len(candidates) == 1:
        return candidates[0]
    if all(_OURS.parse(k) is not None for k in lora_keys):
        raise LoraConfigError(f"{source} looks like this toolkit's or the reference's adapter layout (net.*.lora_A."
                              "default.weight) but has neither lora_config nor base_layer weights: it is incomplete; "
                              "re-export it with python -m cosmos_predict2.lora export")  # fmt: skip
    partial = {m.name: sum(m.parse(k) is not None for k in lora_keys) for m in KEY_MAPS.values()}
    guess = max(partial, key=partial.get)
    if not partial[guess]:
        raise LoraConfigError(f"cannot tell the adapter format of {source}: no key follows a known format's names, "
                              f"e.g. {lora_keys[0]!r}; known formats: {', '.join(FORMAT_NAMES)} (lora/formats.py)")
    raise LoraConfigError(
        f"cannot tell the adapter format of {source}: {partial[guess]} of {len(lora_keys)} LoRA keys look like "
        f"{KEY_MAPS[guess].title} ({guess}), e.g. {lora_keys[0]!r}; known formats: {', '.join(FORMAT_NAMES)}")


# ----------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ImportedAdapter:
    format: str
    adapter: AdapterFile
    source: str
    alpha_from: str  # where alpha came from, for the log and `inspect`


def _read_raw(path: Path) -> tuple[Mapping, dict]:
    """(tensors or checkpoint dict, metadata) of a .pt, a .safetensors, or a PEFT / diffusers folder."""
    from safetensors import safe_open

    from cosmos_predict2.io import safe_load

    meta: dict = {}
    if path.is_dir():
        if (path / PEFT_CONFIG_NAME).is_file():
            meta["peft_config"] = json.loads((path / PEFT_CONFIG_NAME).read_text())
            path = path / PEFT_WEIGHT_NAME
        elif (path / DIFFUSERS_WEIGHT_NAME).is_file():
            path = path / DIFFUSERS_WEIGHT_NAME
        else:
            raise LoraConfigError(f"{path} is a folder without {PEFT_CONFIG_NAME} or {DIFFUSERS_WEIGHT_NAME}")
    if not path.is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta.update(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    state = safe_load(path, what="LoRA checkpoint")
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise LoraConfigError(f"{path} holds a {type(state).__name__}, not a dict of adapter tensors")
    return state, meta


def infer_targets(modules: set[str]) -> list[str]:
    """PEFT target suffixes that select exactly `modules` in a network with blocks 0..max: the short name
    (`q_proj`: self- and cross-attention) when it covers every block, `self_attn.q_proj` when only one attention
    has it, else the full module names."""
    by_suffix: dict[str, set[int]] = {}
    exact = []
    for m in modules:
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", m)
        if match:
            by_suffix.setdefault(match.group(2), set()).add(int(match.group(1)))
        else:
            exact.append(m)
    blocks = set(range(max((max(v) for v in by_suffix.values()), default=-1) + 1))
    full = {s for s, idx in by_suffix.items() if idx == blocks}
    targets = []
    for t in VALID_TARGETS:
        both = {f"self_attn.{t}", f"cross_attn.{t}"} if "." not in t else {t}
        if both <= full:
            targets.append(t)
            full -= both
    targets += sorted(full)
    exact += [f"blocks.{i}.{s}" for s, idx in by_suffix.items() if idx != blocks for i in sorted(idx)]
    return targets + sorted(exact)


def _spec_from_tensors(weights: Mapping[str, torch.Tensor], alpha: float | None, source: str) -> LoraSpec:
    ranks = {v.shape[0] for k, v in weights.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise LoraConfigError(f"{source}: adapters of several ranks {sorted(ranks)} in one file are not supported")
    rank = ranks.pop()
    return LoraSpec(rank=rank, alpha=rank if alpha is None else alpha,
                    target_modules=infer_targets({module_of(k) for k in weights}))


def _recorded_config(meta: Mapping) -> dict | None:
    if CONFIG_METADATA_KEY in meta:
        cfg = json.loads(meta[CONFIG_METADATA_KEY])
        if cfg.get("format") == ADAPTER_FORMAT:
            return cfg
    return None


def _alpha_of(fmt: str, meta: Mapping, alphas: Mapping[str, float], alpha: float | None,
              source: str) -> tuple[float | None, str]:
    """The format's own record of alpha (before any --alpha), as its loader reads it."""
    if alpha is not None:
        return alpha, "--alpha"
    if fmt == "diffusers" and LORA_ADAPTER_METADATA_KEY in meta:
        config = json.loads(meta[LORA_ADAPTER_METADATA_KEY])
        return float(config.get("transformer.lora_alpha", config.get("lora_alpha"))), "diffusers lora_adapter_metadata"
    if fmt == "peft" and "peft_config" in meta:
        return float(meta["peft_config"]["lora_alpha"]), PEFT_CONFIG_NAME
    if alphas:
        values = set(alphas.values())
        if len(values) != 1:
            raise LoraConfigError(f"{source}: per-module alphas differ {sorted(values)[:4]}; not supported")
        return values.pop(), ".alpha tensors"
    if fmt == "reference":
        raise LoraConfigError(f"{source} is a reference-format LoRA checkpoint, which does not record lora_alpha: "
                              "pass --alpha (the value used in training, e.g. 16 for the 2B guide run)")
    return None, "not recorded: alpha = rank (what diffusers, ComfyUI and kohya assume)"


def _with_component_prefix(state: Mapping, meta: dict) -> tuple[Mapping, dict]:
    """diffusers' model-level `save_lora_adapter` writes the transformer's keys and config without the
    `transformer.` component prefix that the pipeline-level `save_lora_weights` adds: add it."""
    keys = [k for k in state if isinstance(k, str)]
    if not keys or not all(k.startswith("transformer_blocks.") and ".lora_" in k for k in keys):
        return state, meta
    meta = dict(meta)
    if LORA_ADAPTER_METADATA_KEY in meta:
        config = json.loads(meta[LORA_ADAPTER_METADATA_KEY])
        meta[LORA_ADAPTER_METADATA_KEY] = json.dumps({f"transformer.{k}": v for k, v in config.items()})
    return {f"transformer.{k}": v for k, v in state.items()}, meta


def read_any_adapter(path: str | os.PathLike, alpha: float | None = None) -> ImportedAdapter:
    """An adapter in any of the formats of `KEY_MAPS`, auto-detected, as one of our `AdapterFile`s (base record
    empty unless the file carries ours). `alpha` overrides the file's record (required for reference files)."""
    path = Path(path)
    state, meta = _with_component_prefix(*_read_raw(path))
    fmt = detect_format(state, str(path))
    if fmt == "ours":
        adapter = AdapterFile.from_state(state, str(path))
        if alpha is not None and float(alpha) != float(adapter.spec.alpha):
            raise LoraConfigError(f"{path}: --alpha {alpha} but the adapter records alpha {adapter.spec.alpha}")
        return ImportedAdapter(fmt, adapter, str(path), "lora_config")
    if fmt == "reference":
        from cosmos_predict2.lora.files import split_reference_lora_checkpoint

        weights = split_reference_lora_checkpoint(state, NET)[1]
        ema = split_reference_lora_checkpoint(state, NET_EMA)[1] or None
        spec = _spec_from_tensors(weights, _alpha_of(fmt, meta, {}, alpha, str(path))[0], str(path))
        return ImportedAdapter(fmt, AdapterFile(spec, {}, weights, ema), str(path), "--alpha")
    weights, alphas = from_format_keys(fmt, state, str(path))
    recorded = _recorded_config(meta)
    if recorded is not None and alpha is None:
        adapter = AdapterFile(LoraSpec.from_dict(recorded), dict(recorded.get("base", {})), weights)
        return ImportedAdapter(fmt, adapter, str(path), f"{CONFIG_METADATA_KEY} metadata")
    value, how = _alpha_of(fmt, meta, alphas, alpha, str(path))
    return ImportedAdapter(fmt, AdapterFile(_spec_from_tensors(weights, value, str(path)), {}, weights), str(path), how)


# ----------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------

# Where each format is written under an output path: a file for the single-file formats, a folder otherwise.
FILE_FORMATS = {"ours": ".pt", "reference": ".pt", "comfyui": ".safetensors", "kohya": ".safetensors"}


def _save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> Path:
    from safetensors.torch import save as safetensors_bytes

    from cosmos_predict2.io import atomic_write

    data = safetensors_bytes({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    return atomic_write(path, lambda f: f.write(data))


def _peft_config(spec: LoraSpec, target_modules: list[str]) -> dict:
    d = spec.to_peft(target_modules).to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}


def diffusers_targets(spec: LoraSpec) -> list[str]:
    # A PEFT target matches by name suffix; map each suffix the same way module names are mapped.
    return sorted({to_diffusers_name(t) if "." in t else to_diffusers_name(f"self_attn.{t}").split(".", 1)[1]
                   for t in spec.target_modules})


def _our_config_json(adapter: AdapterFile) -> str:
    return json.dumps(adapter.config(), sort_keys=True)


def reference_state(adapter: AdapterFile, base_path: str | os.PathLike, use_ema: bool = True) -> dict:
    """The reference's whole-network LoRA checkpoint: the base (memory-mapped, not copied) under `net.` with
    adapted layers as `<module>.base_layer.weight|bias`, the adapters as `lora_{A,B}.default.weight`; with EMA
    adapters in the file, the same network again under `net_ema.` (EMA adapters, same base: it is frozen)."""
    from cosmos_predict2.io import safe_load
    from cosmos_predict2.networks.weights import extract_prefixed

    base = extract_prefixed(safe_load(base_path, what="base DiT"), NET)
    adapted = {module_of(k) for k in adapter.weights}
    missing = sorted(m for m in adapted if f"{m}.weight" not in base)
    if missing:
        raise LoraConfigError(f"base DiT {base_path} has no layer {missing[0]} that the adapter adapts: wrong base")
    layers = {}
    for name, value in base.items():
        module, _, leaf = name.rpartition(".")
        layers[f"{module}.base_layer.{leaf}" if module in adapted else name] = value
    state = {NET + k: v for k, v in {**layers, **adapter.weights}.items()}
    if use_ema and adapter.ema:
        state.update({NET_EMA + k: v for k, v in {**layers, **adapter.ema}.items()})
    return state


def write_adapter(adapter: AdapterFile, fmt: str, out: str | os.PathLike, use_ema: bool = True,
                  dtype: torch.dtype | None = None, base_path: str | os.PathLike | None = None) -> Path:
    """Write `adapter` in format `fmt` to `out` (a file for ours/reference/comfyui/kohya, a folder for
    diffusers/peft). `use_ema`: the EMA adapters when the file has them. `dtype`: cast the adapter tensors
    (bf16 for an inference-only file); None keeps them (fp32 from training). Only our format keeps both sets."""
    from cosmos_predict2.io import atomic_torch_save, atomic_write_text

    if fmt not in KEY_MAPS:
        raise LoraConfigError(f"unknown adapter format {fmt!r}; known: {', '.join(FORMAT_NAMES)}")
    cast = (lambda t: t.detach().to(dtype)) if dtype else (lambda t: t.detach())
    chosen = {k: cast(v) for k, v in adapter.inference_weights(use_ema).items()}
    out = Path(out)
    if fmt in FILE_FORMATS:
        out.parent.mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
    if fmt == "ours":
        keep_ema = use_ema and adapter.ema is not None and dtype is None  # an inference-only file holds one set
        ema = {k: cast(v) for k, v in adapter.ema.items()} if keep_ema else None
        weights = {k: cast(v) for k, v in adapter.weights.items()} if keep_ema else chosen
        return atomic_torch_save(AdapterFile(adapter.spec, adapter.base, weights, ema).to_state(), out)
    if fmt == "reference":
        if base_path is None:
            raise LoraConfigError("the reference format holds the whole network: pass --base (the base DiT .pt)")
        ref = AdapterFile(adapter.spec, adapter.base, {k: cast(v) for k, v in adapter.weights.items()},
                          {k: cast(v) for k, v in adapter.ema.items()} if adapter.ema else None)
        return atomic_torch_save(reference_state(ref, base_path, use_ema), out)
    tensors = to_format_keys(fmt, chosen, adapter.spec)
    ours = {CONFIG_METADATA_KEY: _our_config_json(adapter)}
    if fmt == "diffusers":
        config = _peft_config(adapter.spec, diffusers_targets(adapter.spec))
        # diffusers stores the config per component, prefixed with the component name.
        metadata = json.dumps({f"transformer.{k}": v for k, v in config.items()}, sort_keys=True)
        return _save_safetensors(tensors, out / DIFFUSERS_WEIGHT_NAME,
                                 {"format": "pt", LORA_ADAPTER_METADATA_KEY: metadata, **ours})
    if fmt == "peft":
        _save_safetensors(tensors, out / PEFT_WEIGHT_NAME, {"format": "pt", **ours})
        config = _peft_config(adapter.spec, list(adapter.spec.target_modules))
        config["base_model_name_or_path"] = adapter.base.get("dit_path")
        atomic_write_text(out / PEFT_CONFIG_NAME, json.dumps(config, indent=2))
        return out
    # comfyui / kohya: kohya's training metadata names rank and alpha too (sd-scripts' ss_* keys).
    extra = {"ss_network_module": "networks.lora", "ss_network_dim": str(adapter.spec.rank),
             "ss_network_alpha": str(adapter.spec.alpha)} if fmt == "kohya" else {}
    return _save_safetensors(tensors, out, {"format": "pt", **extra, **ours})
