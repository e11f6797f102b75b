"""The prompt refiner: Cosmos-Reason1-7B (a Qwen2.5-VL model, transformers' `Qwen2_5_VLForConditionalGeneration` and
`AutoProcessor`) rewrites each prompt while looking at the job's conditioning frames, as the reference does
(cosmos_predict2/auxiliary/cosmos_reason1.py there, `CosmosReason1.refine_prompt`): the same system instruction, the
same processor pixel bounds, the checkpoint's own generation config with `max_new_tokens=512` and only ASCII tokens
allowed. Where this differs: the model sees the conditioning frames at the generation size (one image, or the 5
frames as a short video) rather than the raw input file, and attention is PyTorch SDPA (the reference asks for
flash-attn 2, which is not a dependency here).

`offload=True` keeps the model on the CPU except while it generates. Heavy imports only inside `PromptRefiner`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch

PROMPT_REFINER_REPO = "nvidia/Cosmos-Reason1-7B"
PROMPT_REFINER_DIR = "checkpoints/nvidia/Cosmos-Reason1-7B"
DISABLE_FLAG = "--disable_prompt_refiner"
MIN_PIXELS = 256 * 28 * 28  # the reference's AutoProcessor bounds
MAX_PIXELS = 1280 * 28 * 28
MAX_NEW_TOKENS = 512

# Verbatim from the reference (cosmos_predict2/auxiliary/cosmos_reason1.py), hence its long lines.
# ruff: noqa: E501
SYSTEM_PROMPT_REFINE = (
    """You are a prompt optimization specialist whose goal is to rewrite the user's input prompts into high-quality English prompts by referring to the details of the user's input images, making them more complete and expressive while maintaining the original meaning. You need to integrate the content of the user's photo with the input prompt for the rewrite, strictly adhering to the formatting of the examples provided.\n"""
    """Task Requirements:\n"""
    """1. For overly brief user inputs, reasonably infer and supplement details without changing the original meaning, making the image more complete and visually appealing;\n"""
    """2. Improve the characteristics of the main subject in the user's description (such as appearance, actions, expression, quantity, ethnicity, posture, surrounding environment etc.), rendering style, spatial relationships, and camera angles;\n"""
    """3. The overall output should be in English, retaining original text in quotes and book titles as well as important input information without rewriting them;\n"""
    """4. The prompt should match the user’s intent and provide a precise and detailed style description. If the user has not specified a style, you need to carefully analyze the style of the user's provided photo and use that as a reference for rewriting;\n"""  # noqa: RUF001
    """5. You need to emphasize movement information in the input and different camera angles;\n"""
    """6. Your output should convey natural movement attributes, incorporating natural actions related to the described subject category, using simple and direct verbs as much as possible;\n"""
    """7. You should reference the detailed information in the image, such as character actions, clothing, backgrounds, and emphasize the details in the photo;\n"""
    """8. Control the rewritten prompt to around 80-100 words.\n"""
    """9. No matter what language the user inputs, you must always output in English.\n"""
    """Example of the rewritten English prompt:\n"""
    """1. A Japanese fresh film-style video of a young East Asian girl with double braids sitting by the boat. The girl wears a white square collar puff sleeve dress, decorated with pleats and buttons. She has fair skin, delicate features, and slightly melancholic eyes, staring directly at the camera. Her hair falls naturally, with bangs covering part of her forehead. She rests her hands on the boat, appearing natural and relaxed. The background features a blurred outdoor scene, with hints of blue sky, mountains, and some dry plants. The video has a vintage film texture. A medium shot of a seated portrait.\n"""
    """2. An anime illustration in vibrant thick painting style of a white girl with cat ears holding a folder, showing a slightly dissatisfied expression. She has long dark purple hair and red eyes, wearing a dark gray skirt and a light gray top with a white waist tie and a name tag in bold Chinese characters that says "Ziyang". The background has a light yellow indoor tone, with faint outlines of some furniture visible. A pink halo hovers above her head, in a smooth Japanese cel-shading style. A close-up shot from a slightly elevated perspective.\n"""
    """3. CG game concept digital art featuring a huge crocodile with its mouth wide open, with trees and thorns growing on its back. The crocodile's skin is rough and grayish-white, resembling stone or wood texture. Its back is lush with trees, shrubs, and thorny protrusions. With its mouth agape, the crocodile reveals a pink tongue and sharp teeth. The background features a dusk sky with some distant trees, giving the overall scene a dark and cold atmosphere. A close-up from a low angle.\n"""
    """4. In the style of an American drama promotional poster, Walter White sits in a metal folding chair wearing a yellow protective suit, with the words "Breaking Bad" written in sans-serif English above him, surrounded by piles of dollar bills and blue plastic storage boxes. He wears glasses, staring forward, dressed in a yellow jumpsuit, with his hands resting on his knees, exuding a calm and confident demeanor. The background shows an abandoned, dim factory with light filtering through the windows. There's a noticeable grainy texture. A medium shot with a straight-on close-up of the character.\n"""
    """Directly output the rewritten English text."""
)


def find_weights(folder: str | Path = PROMPT_REFINER_DIR) -> Path | None:
    """The local folder if it holds a config.json, else the snapshot in the Hugging Face cache (offline), else None."""
    if (Path(folder) / "config.json").is_file():
        return Path(folder)
    from huggingface_hub import snapshot_download

    try:
        found = Path(snapshot_download(PROMPT_REFINER_REPO, local_files_only=True))
    except Exception:  # not cached (or an incomplete snapshot)
        return None
    return found if (found / "config.json").is_file() else None


def unavailable_reason(folder: str | Path = PROMPT_REFINER_DIR) -> str | None:
    """Why the prompt refiner cannot run here (one line naming the fix and the flag that disables it), or None."""
    try:
        importlib.import_module("transformers").Qwen2_5_VLForConditionalGeneration  # noqa: B018
    except Exception as e:
        return (f"the prompt refiner is enabled but transformers has no Qwen2.5-VL model ({type(e).__name__}: {e}); "
                f"upgrade transformers, or pass {DISABLE_FLAG} to generate without it.")
    if find_weights(folder) is None:
        return (f"the prompt refiner is enabled but its weights ({PROMPT_REFINER_REPO}) are neither in {folder} nor in "
                f"the Hugging Face cache; download them with `huggingface-cli download {PROMPT_REFINER_REPO} "
                f"--local-dir {folder}`, or pass {DISABLE_FLAG} to generate without it.")  # fmt: skip
    return None


def ascii_token_ids(tokenizer) -> list[int]:
    """Token ids that decode to ASCII only, plus the special tokens (the reference's allowed set)."""
    ids = list(range(tokenizer.vocab_size))
    decoded = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)
    allowed = {i for i, text in zip(ids, decoded) if all(ord(c) < 128 for c in text)}
    return sorted(allowed | set(tokenizer.all_special_ids))


def _allowed_tokens_processor(allowed_ids: list[int]):
    from transformers import LogitsProcessor

    class AllowedTokens(LogitsProcessor):
        """Every other token gets -inf (the reference's AllowedTokensLogitsProcessor)."""

        def __init__(self) -> None:
            self.allowed = torch.tensor(allowed_ids, dtype=torch.long)

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            mask = torch.ones(scores.shape[-1], dtype=torch.bool, device=scores.device)
            mask[self.allowed[self.allowed < scores.shape[-1]].to(scores.device)] = False
            return scores.masked_fill(mask, float("-inf"))

    return AllowedTokens()


class PromptRefiner:
    """`refine(prompt, frames_3_n_H_W) -> prompt`. Loaded on first use; `close()` frees it (the CLI refines every
    prompt before the DiT is loaded, then closes it)."""

    def __init__(
        self,
        device: torch.device | str,
        offload: bool = False,
        checkpoint_dir: str | Path = PROMPT_REFINER_DIR,
        dtype: torch.dtype | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.device, self.offload, self.log = torch.device(device), offload, log
        self.checkpoint_dir = checkpoint_dir
        # bf16 as in the reference; float32 on the CPU (bf16 matmuls are slow there)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model = self.processor = self._logits_processor = None

    def _load(self) -> None:
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        folder = find_weights(self.checkpoint_dir)
        if folder is None:
            raise FileNotFoundError(unavailable_reason(self.checkpoint_dir))
        self.log(f"prompt refiner: loading {folder}")
        self.processor = AutoProcessor.from_pretrained(folder, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            folder, dtype=self.dtype, attn_implementation="sdpa"
        ).eval()
        self.model.to("cpu" if self.offload else self.device)
        self._logits_processor = _allowed_tokens_processor(ascii_token_ids(self.processor.tokenizer))

    def messages(self, prompt: str, num_frames: int) -> list[dict]:
        """The reference's dialog: the system instruction, then the prompt and the image (or video)."""
        kind = "image" if num_frames == 1 else "video"
        return [
            {"role": "system", "content": SYSTEM_PROMPT_REFINE},
            {"role": "user", "content": [{"type": "text", "text": prompt}, {"type": kind}]},
        ]

    @torch.inference_mode()
    def refine(self, prompt: str, frames_3_n_H_W: torch.Tensor) -> str:
        """The rewritten prompt for uint8 conditioning frames [3, n, H, W] (n = 1: an image; more: a video)."""
        from PIL import Image

        if self.model is None:
            self._load()
        images = [Image.fromarray(f.numpy()) for f in frames_3_n_H_W.permute(1, 2, 3, 0).cpu()]
        text = self.processor.apply_chat_template(
            self.messages(prompt, len(images)), tokenize=False, add_generation_prompt=True
        )
        media = {"images": images} if len(images) == 1 else {"videos": [images]}
        inputs = self.processor(text=[text], padding=True, return_tensors="pt", **media)
        if self.offload:
            self.model.to(self.device)
        try:
            inputs = inputs.to(self.device)
            out = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS,
                                      logits_processor=[self._logits_processor])  # fmt: skip
        finally:
            if self.offload:
                self.model.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        refined = self.processor.batch_decode(new_tokens, skip_special_tokens=True,
                                              clean_up_tokenization_spaces=False)[0]  # fmt: skip
        return refined.strip()

    def close(self) -> None:
        self.model = self.processor = self._logits_processor = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
