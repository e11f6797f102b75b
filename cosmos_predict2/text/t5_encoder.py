"""T5 text encoder (docs/reference.md §4): `google-t5/t5-11b` (d_model 1024) loaded from a local folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cosmos_predict2.parallel import resolve_device
from cosmos_predict2.text.embeddings import MAX_TEXT_TOKENS

DEFAULT_T5_PATH = "checkpoints/google-t5/t5-11b"


class T5CheckpointNotFoundError(FileNotFoundError):
    """The T5 folder is missing or incomplete."""


def check_t5_folder(t5_path: str | os.PathLike) -> Path:
    """Return the folder as a Path, or raise a clear error saying where the checkpoint must go."""
    folder = Path(t5_path)
    if not folder.is_dir():
        raise T5CheckpointNotFoundError(
            f"T5 checkpoint folder not found: {folder}. Download google-t5/t5-11b (model + tokenizer files) into "
            f"'{DEFAULT_T5_PATH}' (or pass --t5_path to a folder holding config.json, the weights and the tokenizer)."
        )
    if not (folder / "config.json").is_file():
        raise T5CheckpointNotFoundError(
            f"{folder} has no config.json: it is not a transformers T5 checkpoint folder. Put google-t5/t5-11b there."
        )
    return folder


class T5TextEncoder:
    """Encodes prompts with a T5 encoder: (emb_B_L_D, mask_B_L), L = 512, rows past the real tokens zeroed.

    Args:
        t5_path: local folder with a transformers T5 checkpoint and its tokenizer.
        dtype: torch.float32 or torch.bfloat16 (bf16 halves the 11B model's ~45 GB fp32 footprint).
        device: where to run; default GPU when there is one.
        offload_after_use: move the model back to CPU after each `encode` call, freeing GPU memory for the DiT.
        max_length: tokens per prompt (512, truncating longer prompts).
    """

    def __init__(
        self,
        t5_path: str | os.PathLike = DEFAULT_T5_PATH,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        offload_after_use: bool = False,
        max_length: int = MAX_TEXT_TOKENS,
    ) -> None:
        from transformers import T5EncoderModel, T5TokenizerFast

        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"T5 dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        folder = check_t5_folder(t5_path)
        self.device = resolve_device(device)
        self.dtype = dtype
        self.max_length = max_length
        self.offload_after_use = offload_after_use
        self.tokenizer = T5TokenizerFast.from_pretrained(str(folder))
        self.model = T5EncoderModel.from_pretrained(str(folder), torch_dtype=dtype).eval().requires_grad_(False)
        self.model.to("cpu" if offload_after_use else self.device)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.d_model)

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns emb_B_L_D (float32, on self.device) and mask_B_L (int64); emb rows where mask is 0 are zero."""
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
            return_attention_mask=True,
        )
        ids_B_L = batch.input_ids.to(self.device)
        mask_B_L = batch.attention_mask.to(self.device)
        self.model.to(self.device)
        try:
            hidden_B_L_D = self.model(input_ids=ids_B_L, attention_mask=mask_B_L).last_hidden_state.float()
        finally:
            if self.offload_after_use:
                self.model.to("cpu")
        # Count includes `</s>`; every row from the count onward is zeroed (docs/reference.md §4), so padding rows
        # carry no signal into cross-attention, which has no mask.
        lengths_B = mask_B_L.sum(dim=1)
        keep_B_L = torch.arange(self.max_length, device=self.device)[None, :] < lengths_B[:, None]
        hidden_B_L_D = hidden_B_L_D * keep_B_L[:, :, None]
        return hidden_B_L_D, keep_B_L.long()

    def encode_trimmed(self, prompts: list[str]) -> list[np.ndarray]:
        """Per prompt, the float16 array [n_tokens, D] without padding rows (the pickle file format)."""
        emb_B_L_D, mask_B_L = self.encode(prompts)
        lengths = mask_B_L.sum(dim=1).tolist()
        return [emb_B_L_D[i, :n].cpu().numpy().astype(np.float16) for i, n in enumerate(lengths)]
