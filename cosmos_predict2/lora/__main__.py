"""Adapter files from the command line: convert between formats, import, merge into a base, inspect.

    python -m cosmos_predict2.lora export  ADAPTER --format comfyui --out my_lora.safetensors
    python -m cosmos_predict2.lora export  ADAPTER --format reference --base model.pt --out ref_lora.pt
    python -m cosmos_predict2.lora export  ADAPTER --format ours --inference_only --out small.pt   (bf16, one set)
    python -m cosmos_predict2.lora import  their_lora.safetensors --base model.pt --out ours.pt [--alpha A]
    python -m cosmos_predict2.lora merge   --adapter A.pt [--scale 0.8] [--adapter B.pt --scale 0.5]
                                           --base model.pt --out merged.pt
    python -m cosmos_predict2.lora inspect FILE

Options: export --format F [F ...] | all, --out, --base, --no_ema, --dtype bf16|fp32|fp16, --inference_only,
--alpha; import --out, --base, --model_size, --alpha; merge --adapter (repeatable), --scale (one per adapter),
--base, --out, --dtype (default bf16), --no_ema, --allow_base_mismatch; each subcommand's --help has the details.

ADAPTER may be in any format (ours, reference, diffusers, peft, comfyui, kohya): it is detected from the keys.
Formats: lora/formats.py (one table of key maps).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from cosmos_predict2.lora.files import AdapterFile
from cosmos_predict2.lora.formats import FILE_FORMATS, FORMAT_NAMES, ImportedAdapter, read_any_adapter, write_adapter
from cosmos_predict2.lora.spec import LoraConfigError

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def _base_record(base: str, model_size: str | None, recorded: dict) -> dict:
    """What our files record about the base (as training writes it): path, absolute path, size and sha256."""
    from cosmos_predict2.io import cached_file_sha256

    path = Path(base)
    if not path.is_file():
        raise FileNotFoundError(f"--base {path}: base DiT not found")
    info = {**recorded, "dit_path": str(path), "dit_path_abs": str(path.resolve()), "size": path.stat().st_size,
            "sha256": cached_file_sha256(path)}
    if model_size:
        info["model_size"] = model_size
    return info


def cmd_export(args: argparse.Namespace) -> None:
    imported = read_any_adapter(args.adapter, args.alpha)
    formats = list(FORMAT_NAMES) if args.format == ["all"] else args.format
    dtype = torch.bfloat16 if args.inference_only else DTYPES[args.dtype] if args.dtype else None
    for fmt in formats:
        if fmt == "reference" and not args.base:
            print("skipping reference: it holds the whole network, pass --base", file=sys.stderr)
            continue
        out = Path(args.out)
        if len(formats) > 1:
            out = out / (fmt + FILE_FORMATS.get(fmt, ""))
        written = write_adapter(imported.adapter, fmt, out, use_ema=not args.no_ema, dtype=dtype, base_path=args.base)
        print(f"{fmt}: {written}")


def cmd_import(args: argparse.Namespace) -> None:
    imported = read_any_adapter(args.file, args.alpha)
    adapter = imported.adapter
    base = _base_record(args.base, args.model_size, adapter.base) if args.base else dict(adapter.base)
    written = write_adapter(AdapterFile(adapter.spec, base, adapter.weights, adapter.ema), "ours", args.out)
    print(f"{imported.format} adapter {args.file} ({adapter.spec.describe()}, alpha from {imported.alpha_from}) "
          f"written as {written}")


def cmd_merge(args: argparse.Namespace) -> None:
    from cosmos_predict2.lora.merge import ScaledAdapter, merge_to_file

    scales = args.scale or [1.0] * len(args.adapter)
    if len(scales) != len(args.adapter):
        raise LoraConfigError(f"{len(args.adapter)} --adapter but {len(scales)} --scale: give one scale per adapter")
    adapters = [ScaledAdapter(read_any_adapter(a, args.alpha).adapter, s, a) for a, s in zip(args.adapter, scales)]
    if not args.allow_base_mismatch:
        from cosmos_predict2.inference.model_loading import check_base_identity

        for a in adapters:
            check_base_identity(Path(a.source), a.adapter.base, Path(args.base))
    written = merge_to_file(adapters, args.base, args.out, DTYPES[args.dtype], use_ema=not args.no_ema)
    print(f"merged {', '.join(f'{a.source} x {a.scale}' for a in adapters)} into {args.base}: {written}")


def describe(imported: ImportedAdapter, path: Path) -> list[str]:
    a, spec = imported.adapter, imported.adapter.spec
    base = a.base
    weights = a.weights
    count = len(weights) + (len(a.ema) if a.ema else 0)
    size = sum(t.numel() * t.element_size() for t in weights.values()) + (
        sum(t.numel() * t.element_size() for t in a.ema.values()) if a.ema else 0)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in weights.values()})
    iteration = re.search(r"iter_(\d+)", path.name)
    return [
        f"file:        {path}",
        f"format:      {imported.format}",
        f"base model:  {base.get('model_size') or 'not recorded'}, {base.get('dit_path') or 'path not recorded'}",
        f"base sha256: {base.get('sha256') or 'not recorded'}",
        f"rank/alpha:  {spec.rank} / {spec.alpha} (alpha from {imported.alpha_from})",
        f"targets:     {','.join(spec.target_modules)}",
        f"iterations:  {int(iteration.group(1)) if iteration else 'not recorded (from a file named iter_N.pt)'}",
        f"tensors:     {count} ({size / 1e6:.1f} MB, {'/'.join(dtypes)}; {len(weights) // 2} adapted layers)",
        f"EMA:         {'present' if a.ema else 'absent'}",
    ]


def cmd_inspect(args: argparse.Namespace) -> None:
    print("\n".join(describe(read_any_adapter(args.file, args.alpha), Path(args.file))))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cosmos_predict2.lora", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    alpha = dict(type=float, default=None, help="lora_alpha for files that do not record it (reference format)")
    e = sub.add_parser("export", help="write an adapter in another format")
    e.add_argument("adapter")
    e.add_argument("--format", nargs="+", choices=(*FORMAT_NAMES, "all"), required=True)
    e.add_argument("--out", required=True, help="file or folder (a folder of one entry per format when several)")
    e.add_argument("--base", default=None, help="base DiT .pt (the reference format holds the whole network)")
    e.add_argument("--no_ema", action="store_true", help="the trained adapters instead of their EMA")
    e.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="cast the adapters (default: keep fp32)")
    e.add_argument("--inference_only", action="store_true", help="one set (EMA unless --no_ema), bf16")
    e.add_argument("--alpha", **alpha)
    i = sub.add_parser("import", help="any format -> this toolkit's adapter file")
    i.add_argument("file")
    i.add_argument("--out", required=True)
    i.add_argument("--base", default=None, help="record this base DiT (path, size, sha256) in the file")
    i.add_argument("--model_size", default=None, help="record the base model size (2B, 14B)")
    i.add_argument("--alpha", **alpha)
    m = sub.add_parser("merge", help="fold adapters into a base checkpoint (plain net.* file, bf16)")
    m.add_argument("--adapter", action="append", required=True)
    m.add_argument("--scale", action="append", type=float, default=None, help="one per --adapter (default 1)")
    m.add_argument("--base", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    m.add_argument("--no_ema", action="store_true")
    m.add_argument("--allow_base_mismatch", action="store_true")
    m.add_argument("--alpha", **alpha)
    s = sub.add_parser("inspect", help="format, base, rank/alpha/targets, size of an adapter file")
    s.add_argument("file")
    s.add_argument("--alpha", **alpha)
    return p


COMMANDS = {"export": cmd_export, "import": cmd_import, "merge": cmd_merge, "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    from cosmos_predict2.io import CheckpointFileError

    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (LoraConfigError, FileNotFoundError, CheckpointFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
