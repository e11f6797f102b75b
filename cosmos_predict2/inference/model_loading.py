"""Loading the DiT for inference: a base checkpoint, one of our adapter checkpoints (adapters + their config, the
base from the recorded path), or a reference LoRA checkpoint (whole adapted network; docs/reference.md §7, §8, §12)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cosmos_predict2.io import cached_file_sha256, safe_load
from cosmos_predict2.lora import AdapterFile, LoraConfigError, LoraSpec, is_adapter_checkpoint
from cosmos_predict2.lora.adapters import add_lora, load_adapter_weights, merge_lora_, set_lora_scale
from cosmos_predict2.lora.files import has_reference_lora, infer_spec_from_weights, split_reference_lora_checkpoint
from cosmos_predict2.networks import CheckpointMismatchError, build_net, load_dit_weights
from cosmos_predict2.networks.weights import IGNORED_PREFIXES, assign_state_dict


@dataclass
class LoraFlags:
    """The optional --lora_* flags; None means "take it from the checkpoint"."""

    rank: int | None = None
    alpha: float | None = None
    target_modules: str | None = None
    scale: float = 1.0
    base_dit_path: str | None = None
    merge: bool = True  # fold the adapters into the base weights: base-model speed at inference
    allow_base_mismatch: bool = False  # generate even when the base's size/sha256 differ from the recorded ones
    # --load_ema: True = the EMA weights (error if the file has none), False = the trained ones, None = the file
    # kind's default (our adapter files: EMA adapters when present; reference LoRA checkpoints: net.*).
    load_ema: bool | None = None

    def spec_flags(self) -> dict:
        """The flags that must equal the adapter file's values, by LoRA config key."""
        return {"lora_rank": self.rank, "lora_alpha": self.alpha, "lora_target_modules": self.target_modules}


class BaseMismatchError(LoraConfigError):
    """The base DiT is not the file the adapter was trained on (size or sha256 differ from the recorded ones)."""


@dataclass
class LoadedNet:
    net: nn.Module
    description: str  # one line for the log: what was loaded from where
    lora_spec: LoraSpec | None = None


def _peek(path: Path) -> Mapping | None:
    """The checkpoint dict when `path` is a .pt/.pth file (memory-mapped: reading it again later is cheap)."""
    if path.suffix not in (".pt", ".pth"):
        return None
    state = safe_load(path)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    return state if isinstance(state, Mapping) else None


EMA_PREFIX = "net_ema."


def _has_ema(state: Mapping) -> bool:
    return any(isinstance(k, str) and k.startswith(EMA_PREFIX) for k in state)


def _no_ema_error(path: Path, what: str) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"--load_ema: {path} holds no EMA weights ({what}; training saves them only with EMA enabled): drop "
        "--load_ema to generate with its trained weights"
    )


def check_load_ema(dit_path: str | os.PathLike, use_lora: bool) -> None:
    """With --load_ema, fail before any model is loaded when the checkpoint has no EMA copy (a memory-mapped peek:
    only the keys are read). A missing file is reported elsewhere."""
    path = Path(dit_path)
    if not path.exists():
        return
    state = _peek(path)
    if state is None:
        raise CheckpointMismatchError(
            f"--load_ema: {path} is not a .pt checkpoint (diffusers/safetensors files hold one set of weights, no "
            "net_ema.*): drop --load_ema"
        )
    if use_lora and is_adapter_checkpoint(state):
        if not AdapterFile.from_state(state, str(path)).ema:
            raise _no_ema_error(path, "no EMA adapters")
    elif not _has_ema(state):
        raise _no_ema_error(path, "no net_ema.* keys")


def _meta_net(model_size: str, net_config: Mapping | None) -> nn.Module:
    # Built on meta: loading assigns the checkpoint's tensors, so a 14B model is never allocated twice.
    return build_net(dict(net_config) if net_config else model_size, device="meta")


def load_base_net(
    dit_path: str | os.PathLike, model_size: str, device: torch.device, dtype: torch.dtype,
    net_config: Mapping | None = None, load_ema: bool = False,
) -> LoadedNet:
    """A base (non-LoRA) checkpoint; a LoRA checkpoint gets an error saying which script and flag to use.
    `load_ema`: the `net_ema.*` weights of a .pt checkpoint instead of its `net.*` ones (the reference's
    --load_ema, off by default there too)."""
    path = Path(dit_path)
    if not path.exists():
        raise FileNotFoundError(
            f"--dit_path {path} not found: download the Cosmos-Predict2-{model_size}-Video2World checkpoint there "
            "or pass --dit_path"
        )
    state = _peek(path)
    if state is not None and (is_adapter_checkpoint(state) or has_reference_lora(state)):
        raise LoraConfigError(
            f"{path} is a LoRA checkpoint: run examples/video2world_lora.py --use_lora --dit_path {path} "
            "(its rank, alpha and targets are read from the file)"
        )
    if load_ema:
        check_load_ema(path, use_lora=False)
    prefix = EMA_PREFIX if load_ema else "net."
    net = load_dit_weights(_meta_net(model_size, net_config), path, dtype=dtype, prefix=prefix)
    which = " (EMA weights, net_ema.*)" if load_ema else ""
    return LoadedNet(net.to(device).eval().requires_grad_(False), f"base DiT {model_size} from {path}{which}")


def _finish_lora(
    net: nn.Module, spec: LoraSpec, weights: Mapping[str, torch.Tensor], source: str, flags: LoraFlags,
    device: torch.device, dtype: torch.dtype,
) -> nn.Module:
    # Adapters stay in fp32 (PEFT casts activations for them); the base runs in `dtype`.
    add_lora(net, spec, adapter_dtype=torch.float32)
    load_adapter_weights(net, {k: v.float() for k, v in weights.items()}, source)
    set_lora_scale(net, flags.scale)
    if flags.merge:
        merge_lora_(net)
    return net.to(device).eval().requires_grad_(False)


def resolve_base_path(adapter_path: Path, base: Mapping, explicit: str | None) -> tuple[Path, str]:
    """The base DiT of an adapter and how it was found: --base_dit_path; else the recorded `dit_path` as given
    (relative to the working directory) if it exists, else the recorded absolute `dit_path_abs`, else `dit_path`
    relative to the adapter's job folder or any folder above it (training ran in one of them)."""
    source = str(adapter_path)
    if explicit:
        if not Path(explicit).exists():
            raise FileNotFoundError(f"--base_dit_path {explicit} not found (base DiT for LoRA checkpoint {source})")
        return Path(explicit), "--base_dit_path"
    recorded = base.get("dit_path")
    if not recorded:
        raise LoraConfigError(f"{source} does not record its base model: pass --base_dit_path")
    tried = [Path(recorded)]
    if tried[0].exists():
        return tried[0], "recorded dit_path"
    if base.get("dit_path_abs"):
        tried.append(Path(base["dit_path_abs"]))
        if tried[-1].exists():
            return tried[-1], "recorded dit_path_abs"
    if not Path(recorded).is_absolute():
        for folder in adapter_path.absolute().parents:  # JOB/checkpoints/model/iter_*.pt -> JOB, ..., /
            candidate = folder / recorded
            if candidate.exists():
                return candidate, f"recorded dit_path, relative to {folder}"
    raise FileNotFoundError(
        f"base DiT {recorded} (the path recorded in the adapter at training time) not found for LoRA checkpoint "
        f"{source} (tried {', '.join(map(str, tried))} and the folders above the adapter): pass --base_dit_path"
    )


def check_base_identity(adapter_path: Path, base: Mapping, base_path: Path, allow_mismatch: bool = False) -> str:
    """Raise BaseMismatchError unless `base_path` is the file the adapter was trained on: same size (free), then
    same sha256 (hashed once per machine and file version, see `cached_file_sha256`). Adapters that record no
    sha256 (old files, hash_base_checkpoint=False, random bases) and diffusers folders are not checked. Returns
    what was checked, for the log line."""
    recorded = base.get("sha256")
    if not recorded or not base_path.is_file():
        return "base identity not recorded, not checked"
    if allow_mismatch:
        return "base identity not checked: --allow_base_mismatch"
    size, recorded_size = base_path.stat().st_size, base.get("size")
    trained_on = f"LoRA checkpoint {adapter_path} was trained on base {base.get('dit_path')}"
    advice = ("pass the base it was trained on with --base_dit_path, or --allow_base_mismatch to generate with "
              "this base anyway")  # fmt: skip
    if recorded_size is not None and int(recorded_size) != size:
        raise BaseMismatchError(f"{trained_on} ({int(recorded_size):,} bytes, sha256 {recorded[:12]}...) but the "
                                f"base DiT {base_path} has {size:,} bytes: {advice}")  # fmt: skip
    digest = cached_file_sha256(base_path)
    if digest != recorded:
        raise BaseMismatchError(f"{trained_on} (sha256 {recorded[:12]}...) but the base DiT {base_path} has sha256 "
                                f"{digest[:12]}...: {advice}")  # fmt: skip
    return f"sha256 {digest[:12]}... as recorded"


def load_lora_net(
    dit_path: str | os.PathLike, model_size: str | None, device: torch.device, dtype: torch.dtype,
    flags: LoraFlags, net_config: Mapping | None = None,
) -> LoadedNet:
    """Our adapter checkpoint (config read from the file, base from --base_dit_path or the recorded path) or a
    reference LoRA checkpoint (base + adapters; alpha is not recorded there and must be given)."""
    path = Path(dit_path)
    if not path.is_file():
        raise FileNotFoundError(f"--dit_path {path}: LoRA checkpoint not found")
    state = _peek(path)
    if state is None:
        raise LoraConfigError(f"--dit_path {path}: a LoRA checkpoint is a .pt file (model/iter_XXXXXXXXX.pt)")
    source = str(path)

    if is_adapter_checkpoint(state):
        adapter = AdapterFile.from_state(state, source)
        if flags.load_ema and not adapter.ema:
            raise _no_ema_error(path, "no EMA adapters")
        use_ema = flags.load_ema is not False  # default: the EMA adapters when the file has them
        spec, base, weights = adapter.spec, adapter.base, adapter.inference_weights(use_ema=use_ema)
        adapters = "EMA adapters" if use_ema and adapter.ema else "trained adapters"
        spec.check_matches(source, **flags.spec_flags())
        recorded_size = base.get("model_size")
        if model_size and recorded_size and model_size != recorded_size:
            raise LoraConfigError(
                f"{source}: --model_size {model_size} but the adapter was trained on the {recorded_size} model"
            )
        size = recorded_size or model_size
        base_path, how = resolve_base_path(path, base, flags.base_dit_path)
        checked = check_base_identity(path, base, base_path, flags.allow_base_mismatch)
        cfg = base.get("net_config") or net_config
        net = load_dit_weights(_meta_net(size, cfg), base_path, dtype=dtype)
        net = _finish_lora(net, spec, weights, source, flags, device, dtype)
        desc = f"base DiT {size} from {base_path} ({how}; {checked}) + LoRA {source} (rank {spec.rank}, " \
               f"alpha {spec.alpha}, targets {','.join(spec.target_modules)}, scale {flags.scale}, {adapters})"
        return LoadedNet(net, desc, spec)

    if has_reference_lora(state):
        if flags.load_ema and not _has_ema(state):
            raise _no_ema_error(path, "no net_ema.* keys")
        prefix = EMA_PREFIX if flags.load_ema else "net."  # the reference generates with net.* unless told
        base_sd, lora_sd = split_reference_lora_checkpoint(state, prefix=prefix)
        # Reference files may carry RoPE tables and accumulators; they are recomputed, never loaded.
        base_sd = {k: v for k, v in base_sd.items() if not k.startswith(IGNORED_PREFIXES)}
        spec = infer_spec_from_weights(lora_sd, flags.alpha)
        spec.check_matches(source, **{**flags.spec_flags(), "lora_alpha": None})
        net = assign_state_dict(_meta_net(model_size or "2B", net_config), base_sd, source, dtype=dtype)
        net = _finish_lora(net, spec, lora_sd, source, flags, device, dtype)
        desc = f"reference LoRA checkpoint {source} (rank {spec.rank}, alpha {spec.alpha} from --lora_alpha, " \
               f"scale {flags.scale}, {prefix}* weights)"
        return LoadedNet(net, desc, spec)

    raise CheckpointMismatchError(
        f"{source} holds no LoRA adapters (no lora_A/lora_B weights, no lora_config): for a base model use "
        "examples/video2world.py, or drop --use_lora"
    )


def parse_lora_paths(paths: list[str], scales: list[float] | None) -> list[tuple[str, float]]:
    """`--lora_path A.pt --lora_path B.pt:0.5 [--lora_scale 0.8 ...]` -> [(path, scale)]: an inline `:scale`, or one
    --lora_scale per --lora_path in order, or one --lora_scale for a single path; default 1."""
    pairs = []
    for p in paths:
        path, sep, tail = p.rpartition(":")
        inline = None
        if sep and not Path(p).exists():
            try:
                inline = float(tail)
            except ValueError:
                path = p
        pairs.append((path if inline is not None else p, inline))
    scales = list(scales or [])
    if scales and any(s is not None for _, s in pairs):
        raise LoraConfigError("give adapter scales either inline (--lora_path A.pt:0.8) or with --lora_scale, not both")
    if scales and len(scales) != len(pairs):
        raise LoraConfigError(f"{len(pairs)} --lora_path but {len(scales)} --lora_scale: give one scale per adapter")
    return [(p, scales[i] if scales else (1.0 if s is None else s)) for i, (p, s) in enumerate(pairs)]


def check_multi_lora_base(base_dit_path: str | None) -> None:
    """With --lora_path, --dit_path names the base DiT: an adapter there is a mix-up (a memory-mapped peek)."""
    state = _peek(Path(base_dit_path)) if base_dit_path and Path(base_dit_path).is_file() else None
    if state is not None and (is_adapter_checkpoint(state) or has_reference_lora(state)):
        raise LoraConfigError(f"--dit_path {base_dit_path} is a LoRA checkpoint, but with --lora_path --dit_path is "
                              "the base DiT: pass this adapter as another --lora_path (or drop --dit_path)")


def load_multi_lora_net(
    adapters: list[tuple[str, float]], base_dit_path: str | None, model_size: str | None, device: torch.device,
    dtype: torch.dtype, flags: LoraFlags,
) -> LoadedNet:
    """Several adapters at once (any format of lora/formats.py), each with its scale, through PEFT's multi-adapter
    support: ranks and targets may differ; adapters recording different base models are refused."""
    from cosmos_predict2.lora.adapters import activate_adapters
    from cosmos_predict2.lora.formats import read_any_adapter
    from cosmos_predict2.lora.merge import ScaledAdapter, check_same_base

    loaded = []
    for path, scale in adapters:
        imported = read_any_adapter(path, flags.alpha)
        if imported.format == "reference":
            raise LoraConfigError(f"--lora_path {path} is a reference LoRA checkpoint (it carries its own base): "
                                  "load it alone with --use_lora --dit_path, or convert it first with "
                                  "python -m cosmos_predict2.lora import --alpha A")  # fmt: skip
        loaded.append(ScaledAdapter(imported.adapter, scale, path))
    check_same_base(loaded)
    recorded = next((a for a in loaded if a.adapter.base.get("dit_path")), None)
    if base_dit_path is None and recorded is None:
        raise LoraConfigError("none of the --lora_path adapters records its base model: pass --dit_path (the base)")
    base_path, how = (resolve_base_path(Path(recorded.source), recorded.adapter.base, base_dit_path) if recorded
                      else (Path(base_dit_path), "--dit_path"))  # fmt: skip
    checked = [check_base_identity(Path(a.source), a.adapter.base, base_path, flags.allow_base_mismatch)
               for a in loaded]  # fmt: skip
    size = next((a.adapter.base["model_size"] for a in loaded if a.adapter.base.get("model_size")), None)
    if model_size and size and model_size != size:
        raise LoraConfigError(f"--model_size {model_size} but the adapters were trained on the {size} model")
    cfg = next((a.adapter.base["net_config"] for a in loaded if a.adapter.base.get("net_config")), None)
    net = load_dit_weights(_meta_net(size or model_size or "2B", cfg), base_path, dtype=dtype)
    names = [f"adapter{i}" for i in range(len(loaded))]
    for name, a in zip(names, loaded):
        add_lora(net, a.adapter.spec, adapter_dtype=torch.float32, adapter_name=name)
        use_ema = flags.load_ema is not False
        weights = {k: v.float() for k, v in a.adapter.inference_weights(use_ema).items()}
        load_adapter_weights(net, weights, a.source, adapter_name=name)
        set_lora_scale(net, a.scale, adapter_name=name)
    activate_adapters(net, names)
    if flags.merge:
        merge_lora_(net)
    desc = f"base DiT from {base_path} ({how}; {checked[0]}) + " + " + ".join(
        f"LoRA {a.source} (rank {a.adapter.spec.rank}, alpha {a.adapter.spec.alpha}, scale {a.scale})" for a in loaded)
    return LoadedNet(net.to(device).eval().requires_grad_(False), desc, loaded[0].adapter.spec)
