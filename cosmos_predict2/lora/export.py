"""Export one of our adapter checkpoints (see lora/adapters.py) to the formats other tools load.

- PEFT folder: `adapter_config.json` + `adapter_model.safetensors` (keys `base_model.model.<module>.lora_A.weight`),
  for `peft.PeftModel.from_pretrained` / `set_peft_model_state_dict` over our MinimalV1LVGDiT.
- diffusers: `pytorch_lora_weights.safetensors` with keys `transformer.<diffusers module>.lora_A.weight` (module
  names as in docs/reference.md §1, e.g. `blocks.0.self_attn.q_proj` -> `transformer_blocks.0.attn1.to_q`) and the LoRA
  config in the safetensors metadata (`lora_adapter_metadata`), so rank and alpha travel with the file:
  `CosmosTransformer3DModel.load_lora_adapter(folder, weight_name="pytorch_lora_weights.safetensors")`, or
  `Cosmos2VideoToWorldPipeline.load_lora_weights(folder)`.

    python -m cosmos_predict2.lora.export CHECKPOINT.pt OUT_DIR [--format peft|diffusers|both] [--no_ema]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from cosmos_predict2.lora.files import read_adapter_file
from cosmos_predict2.lora.spec import LoraSpec
from cosmos_predict2.networks.weights import to_diffusers_name

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
PEFT_WEIGHT_NAME = "adapter_model.safetensors"
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY


def read_adapter(path: str | os.PathLike, use_ema: bool = True) -> tuple[LoraSpec, dict, dict[str, torch.Tensor]]:
    """(spec, base info, {"<module>.lora_A.weight": tensor}) with PEFT's adapter name removed."""
    adapter = read_adapter_file(path)
    weights = adapter.inference_weights(use_ema)
    plain = {k.replace(".default.weight", ".weight"): v.detach().float().contiguous() for k, v in weights.items()}
    return adapter.spec, adapter.base, plain


def _peft_config(spec: LoraSpec, target_modules: list[str]) -> dict:
    d = spec.to_peft(target_modules).to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}


def _diffusers_targets(spec: LoraSpec) -> list[str]:
    # A PEFT target matches by name suffix; map each suffix the same way module names are mapped.
    return sorted({to_diffusers_name(t) if "." in t else to_diffusers_name(f"self_attn.{t}").split(".", 1)[1]
                   for t in spec.target_modules})


def export_peft(path: str | os.PathLike, out_dir: str | os.PathLike, use_ema: bool = True) -> Path:
    spec, base, weights = read_adapter(path, use_ema)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"base_model.model.{k}": v for k, v in weights.items()}
    save_file(tensors, str(out / PEFT_WEIGHT_NAME), metadata={"format": "pt"})
    config = _peft_config(spec, list(spec.target_modules))
    config["base_model_name_or_path"] = base.get("dit_path")
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out


def export_diffusers(path: str | os.PathLike, out_dir: str | os.PathLike, use_ema: bool = True) -> Path:
    spec, _, weights = read_adapter(path, use_ema)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"transformer.{to_diffusers_name(k)}": v for k, v in weights.items()}
    config = _peft_config(spec, _diffusers_targets(spec))
    # diffusers stores the config per component, prefixed with the component name.
    metadata = {f"transformer.{k}": v for k, v in config.items()}
    save_file(tensors, str(out / DIFFUSERS_WEIGHT_NAME),
              metadata={"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    return out / DIFFUSERS_WEIGHT_NAME


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


if __name__ == "__main__":
    main()
