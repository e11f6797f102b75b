"""Build a tiny random T5 encoder + tokenizer folder offline, for tests and the demo.

The tokenizer is a small Unigram model built with the `tokenizers` library (no hub download). Embedding
width follows `d_model`; pass d_model=1024 to produce files with the real T5-11B width.

    python -m demo.tiny_t5 OUT_DIR [--d_model 1024]
"""

from __future__ import annotations

import argparse
import os
import string
from pathlib import Path

import torch

_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5
_WORDS = ["▁", "▁a", "▁video", "▁of", "▁the", "▁robot", "▁sks", "▁teal", "▁car", "▁image", "▁person", "▁is"]


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = string.ascii_letters + string.digits + string.punctuation
    # Unigram scores: whole words are preferred over characters, so common prompts give few tokens.
    pieces = [(tok, 0.0) for tok in _SPECIAL_TOKENS]
    pieces += [(w, -2.0) for w in _WORDS]
    pieces += [(c, -5.0) for c in chars] + [("▁" + c, -6.0) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    # T5 appends `</s>` to every sequence; the embedding row count includes it (docs/reference.md §4).
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)


def make_tiny_t5(
    folder: str | os.PathLike,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    d_ff: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random T5EncoderModel (width d_model) and a matching T5TokenizerFast to `folder`."""
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=max(d_model // num_heads, 1),
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    T5EncoderModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--d_model", type=int, default=32)
    parser.add_argument("--num_layers", type=int, default=2)
    args = parser.parse_args()
    print(f"tiny T5 written to {make_tiny_t5(args.folder, d_model=args.d_model, num_layers=args.num_layers)}")


if __name__ == "__main__":
    main()
