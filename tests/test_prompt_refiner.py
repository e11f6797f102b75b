"""The prompt refiner (Cosmos-Reason1-7B = Qwen2.5-VL) with a tiny random Qwen2.5-VL built here: its loading, the
reference's dialog and settings, offloading, and the CLI run that saves the refined prompt beside the video."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_TORCHVISION_OPS = ("roi_align", "_roi_align_backward", "ps_roi_align", "_ps_roi_align_backward", "roi_pool",
                    "_roi_pool_backward", "ps_roi_pool", "_ps_roi_pool_backward", "nms", "qnms", "qroi_align",
                    "deform_conv2d", "_deform_conv2d_backward")  # fmt: skip
_stub_library = None


def ensure_torchvision() -> None:
    """Import torchvision, or skip. PyPI's Linux torchvision wheels are CUDA builds whose C++ ops cannot load with
    a CPU build of torch; then its Python parts (models, transforms: all the guardrail and the Qwen2.5-VL video
    processor use) still import once its op names are declared (without kernels: none of them is called)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        pytest.skip("torchvision is not installed (pip install -e '.[guardrail]')")
    _declare_torchvision_ops()
    import torchvision  # noqa: F401


def _declare_torchvision_ops() -> None:
    global _stub_library
    spec = importlib.util.find_spec("torchvision")
    if spec is not None and _stub_library is None and not hasattr(torch.ops.torchvision, "nms"):
        try:
            torch.ops.load_library(str(Path(spec.origin).parent / "_C.so"))
        except OSError:
            _stub_library = torch.library.Library("torchvision", "DEF")
            for op in _TORCHVISION_OPS:
                _stub_library.define(f"{op}(Tensor[] args) -> Tensor")


_declare_torchvision_ops()  # before anything imports torchvision (transformers does, lazily)



from cosmos_predict2.inference import prompt_refiner  # noqa: E402
from cosmos_predict2.inference.prompt_refiner import PromptRefiner  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]  # fmt: skip
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|>"
    "<|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_reason1(folder: Path) -> Path:
    """A random Qwen2.5-VL (1 vision block, 1 text layer, width 32) and its processor, in the layout of
    nvidia/Cosmos-Reason1-7B. Its lm_head is zero, so greedy decoding picks the lowest allowed token id: id 0 is a
    non-ASCII word (which the ASCII-only filter must reject), id 1 is 'refined'."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,  # fmt: skip
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    ensure_torchvision()  # the Qwen2.5-VL processor needs its video processor
    words = ["é", "refined", "[UNK]", "a", "robot", "video", "of", "the", "teal", "car"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=SPECIAL)  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                  fullatt_block_indexes=[0])  # fmt: skip
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"])  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(folder)
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
                        video_processor=Qwen2VLVideoProcessor(), chat_template=TEMPLATE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reason1(tmp_path_factory) -> Path:
    return make_tiny_reason1(tmp_path_factory.mktemp("reason1") / "Cosmos-Reason1-7B")


def test_reference_settings():
    assert prompt_refiner.MAX_NEW_TOKENS == 512
    assert (prompt_refiner.MIN_PIXELS, prompt_refiner.MAX_PIXELS) == (256 * 28 * 28, 1280 * 28 * 28)
    assert prompt_refiner.SYSTEM_PROMPT_REFINE.startswith("You are a prompt optimization specialist")
    assert prompt_refiner.SYSTEM_PROMPT_REFINE.endswith("Directly output the rewritten English text.")


def test_missing_weights_message(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    reason = prompt_refiner.unavailable_reason(tmp_path / "nowhere")
    assert "--disable_prompt_refiner" in reason and str(tmp_path / "nowhere") in reason
    assert f"huggingface-cli download nvidia/Cosmos-Reason1-7B --local-dir {tmp_path / 'nowhere'}" in reason


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_refine_image_and_video_offloaded(reason1, monkeypatch, device):
    monkeypatch.setattr(prompt_refiner, "MAX_NEW_TOKENS", 6)  # the reference's 512 tokens take ~20 s on a CPU
    assert prompt_refiner.unavailable_reason(reason1) is None
    logs = []
    refiner = PromptRefiner(device, offload=True, checkpoint_dir=reason1, log=logs.append)
    dialog = refiner.messages("a robot", 1)
    assert dialog[0] == {"role": "system", "content": prompt_refiner.SYSTEM_PROMPT_REFINE}
    assert dialog[1]["content"] == [{"type": "text", "text": "a robot"}, {"type": "image"}]
    frames = torch.randint(0, 256, (3, 5, 32, 64), dtype=torch.uint8)
    assert refiner.refine("a robot", frames[:, :1]) == " ".join(["refined"] * 6)  # 'é' (id 0) is filtered out
    assert refiner.refine("a teal car", frames) == " ".join(["refined"] * 6)  # 5 frames: a video
    assert next(refiner.model.parameters()).device.type == "cpu"
    refiner.close()
    assert refiner.model is None and "loading" in logs[0]
