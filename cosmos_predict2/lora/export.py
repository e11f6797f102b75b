"""Export one of our adapter checkpoints to the formats other tools load (the key maps: lora/formats.py).

- PEFT folder: `adapter_config.json` + `adapter_model.safetensors` (keys `base_model.model.<module>.lora_A.weight`),
  for `peft.PeftModel.from_pretrained` / `set_peft_model_state_dict` over our MinimalV1LVGDiT.
- diffusers: `pytorch_lora_weights.safetensors` with keys `transformer.<diffusers module>.lora_A.weight` (module
  names as in docs/reference.md §1, e.g. `blocks.0.self_attn.q_proj` -> `transformer_blocks.0.attn1.to_q`) and the LoRA
  config in the safetensors metadata (`lora_adapter_metadata`), so rank and alpha travel with the file:
  `CosmosTransformer3DModel.load_lora_adapter(folder, weight_name="pytorch_lora_weights.safetensors")`.

    python -m cosmos_predict2.lora.export CHECKPOINT.pt OUT_DIR [--format peft|diffusers|both] [--no_ema]

(the older entry point; `python -m cosmos_predict2.lora export` writes every format.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from cosmos_predict2.lora.files import read_adapter_file
from cosmos_predict2.lora.formats import (
    DIFFUSERS_WEIGHT_NAME,
    LORA_ADAPTER_METADATA_KEY,
    PEFT_WEIGHT_NAME,
    write_adapter,
)
from cosmos_predict2.lora.spec import LoraSpec


def read_adapter(path: str | os.PathLike, use_ema: bool = True) -> tuple[LoraSpec, dict, dict[str, torch.Tensor]]:
    """(spec, base info, {"<module>.lora_A.weight": tensor}) with PEFT's adapter name removed."""
    adapter = read_adapter_file(path)
    weights = adapter.inference_weights(use_ema)
    plain = {k.replace(".default.weight", ".weight"): v.detach().float().contiguous() for k, v in weights.items()}
    return adapter.spec, adapter.base, plain


def export_peft(path: str | os.PathLike, out_dir: str | os.PathLike, use_ema: bool = True) -> Path:
    return write_adapter(read_adapter_file(path), "peft", out_dir, use_ema, dtype=torch.float32)


def export_diffusers(path: str | os.PathLike, out_dir: str | os.PathLike, use_ema: bool = True) -> Path:
    return write_adapter(read_adapter_file(path), "diffusers", out_dir, use_ema, dtype=torch.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="adapter checkpoint, e.g. .../checkpoints/model/iter_000001000.pt")
    parser.add_argument("out_dir")
    parser.add_argument("--format", choices=("peft", "diffusers", "both"), default="both")
    parser.add_argument("--no_ema", action="store_true", help="export the raw adapters instead of their EMA")
    args = parser.parse_args(argv)
    if args.format in ("peft", "both"):
        print(f"PEFT adapter written to {export_peft(args.checkpoint, Path(args.out_dir) / 'peft', not args.no_ema)}")
    if args.format in ("diffusers", "both"):
        written = export_diffusers(args.checkpoint, Path(args.out_dir) / "diffusers", not args.no_ema)
        print(f"diffusers LoRA written to {written}")


__all__ = ["DIFFUSERS_WEIGHT_NAME", "LORA_ADAPTER_METADATA_KEY", "PEFT_WEIGHT_NAME", "export_diffusers",
           "export_peft", "main", "read_adapter"]  # fmt: skip

if __name__ == "__main__":
    main()
