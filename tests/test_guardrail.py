"""The guardrail through NVIDIA's real cosmos-guardrail package, with tiny stand-in weights built here in the layout
its loaders expect (nvidia/Cosmos-Guardrail1 + the package's text guard model). Skipped where the package (or
torchvision) is not installed: `pip install -e ".[guardrail]"`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_prompt_refiner  # noqa: F401  (declares torchvision's ops first where only its CUDA build is installed)
import torch

from cosmos_predict2.inference import guardrail
from cosmos_predict2.inference.guardrail import Guardrail, Refusal

SIGLIP = "models--google--siglip-so400m-patch14-384"
COMMIT = "0" * 40


def _package():
    test_prompt_refiner.ensure_torchvision()
    return pytest.importorskip("cosmos_guardrail.cosmos_guardrail")


def _word_tokenizer(words: list[str], **special):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", **special)


def make_text_guard(folder: Path, verdict: str = "Safe") -> Path:
    """A tiny Qwen3 causal LM standing in for Qwen/Qwen3Guard-Gen-0.6B. Its lm_head is zero, so greedy decoding
    repeats token 0, the word 'Safety: <verdict>' that the package parses."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = _word_tokenizer([f"Safety: {verdict}", "[UNK]", "a", "robot"], eos_token="<|im_end|>",
                                additional_special_tokens=["<|im_start|>", "<|im_end|>"])  # fmt: skip
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>"
                               "{% endfor %}<|im_start|>assistant")  # fmt: skip
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)  # fmt: skip
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.generation_config.max_new_tokens = 4
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _nltk_data(folder: Path) -> None:
    """Empty punkt_tab and wordnet files: enough for word_tokenize and the lemmatizer to load (and lemmatize
    nothing)."""
    punkt = folder / "tokenizers/punkt_tab/english"
    punkt.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).write_text("")
    wordnet = folder / "corpora/wordnet"
    wordnet.mkdir(parents=True)
    (wordnet / "lexnames").write_text("00\tadj.all\t3\n")
    (wordnet / "index.sense").write_text("")
    for pos in ("noun", "verb", "adj", "adv"):
        for name in (f"index.{pos}", f"data.{pos}", f"{pos}.exc"):
            (wordnet / name).write_text("")


def _siglip(folder: Path) -> None:
    """A tiny random SigLIP whose image features are 1152-wide (what the package's classifier takes), saved as a
    Hugging Face cache entry of google/siglip-so400m-patch14-384, as in Cosmos-Guardrail1."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    snapshot = folder / SIGLIP / "snapshots" / COMMIT
    vision = dict(hidden_size=1152, intermediate_size=32, num_hidden_layers=1, num_attention_heads=8,
                  image_size=28, patch_size=14)  # fmt: skip
    text = dict(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                projection_size=1152, max_position_embeddings=16)  # fmt: skip
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(snapshot)
    tokenizer = _word_tokenizer(["[UNK]", "a", "photo"], pad_token="[UNK]")
    processor = SiglipProcessor(SiglipImageProcessor(size={"height": 28, "width": 28}), tokenizer)
    processor.save_pretrained(snapshot)
    (folder / SIGLIP / "refs").mkdir()
    (folder / SIGLIP / "refs" / "main").write_text(COMMIT)


def make_guardrail_weights(folder: Path, unsafe_video: bool = False) -> Path:
    """nvidia/Cosmos-Guardrail1's layout with tiny stand-ins: blocklist words ('zorblax' blocked), the SigLIP cache
    and the 7-class safety_filter.pt (its last layer votes 'Safe', or class 1 when unsafe_video), and RetinaFace's
    Resnet50_Final.pth whose class head sees a face at every anchor (so face blurring visibly runs)."""
    cg = _package()
    block = folder / "blocklist"
    for sub, words in (("custom", "zorblax\n"), ("whitelist", "robot\n"), ("exact_match", "qwxzt\n")):
        (block / sub).mkdir(parents=True)
        (block / sub / "words.txt").write_text(words)
    _nltk_data(block / "nltk_data")
    video = folder / "video_content_safety_filter"
    _siglip(video)
    classifier = cg.VideoSafetyModel(cg.ModelConfig(input_size=1152, num_classes=7))
    with torch.no_grad():
        last = classifier.network.layers[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[1 if unsafe_video else 0] = 5.0
    torch.save({"model": classifier.state_dict()}, video / "safety_filter.pt")
    face = folder / "face_blur_filter"
    face.mkdir()
    cfg = dict(cg.cfg_re50, pretrain=False)
    net = cg.RetinaFace(cfg=cfg, phase="test")
    with torch.no_grad():
        for head in net.ClassHead:
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.copy_(torch.tensor([-5.0, 5.0]).repeat(len(head.conv1x1.bias) // 2))
        for head in net.BboxHead:
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.zero_()
    torch.save(net.state_dict(), face / "Resnet50_Final.pth")
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("guardrail")
    return (make_guardrail_weights(root / "Cosmos-Guardrail1"), make_text_guard(root / "Qwen3Guard-Gen-0.6B"),
            root)  # fmt: skip


def _video(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 5, 64, 64, generator=g) * 2 - 1


def test_missing_weights_name_folder_and_download(tmp_path, monkeypatch):
    from huggingface_hub import constants

    _package()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    reason = guardrail.unavailable_reason(tmp_path / "nowhere", tmp_path / "noguard")
    assert "--disable_guardrail" in reason
    assert f"huggingface-cli download nvidia/Cosmos-Guardrail1 --local-dir {tmp_path / 'nowhere'}" in reason


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_text_and_video_checks(weights, device):
    """On CUDA with offload: the models run on the GPU and go back to the CPU afterwards."""
    folder, guard_folder, _ = weights
    assert guardrail.unavailable_reason(folder, guard_folder) is None
    logs = []
    guard = Guardrail(device, offload=True, weights_dir=folder, text_guard_dir=guard_folder, log=logs.append)
    assert guard.check_text("a robot") == (True, "")
    ok, reason = guard.check_text("a zorblax robot")
    assert not ok and reason.startswith("BLOCKLIST") and "****" in reason
    ok, reason = guard.check_text("")
    assert not ok and "empty" in reason.lower()
    video = _video()
    blurred = guard.check_and_blur_video(video)
    assert isinstance(blurred, torch.Tensor) and blurred.shape == video.shape
    assert not torch.allclose(blurred, video, atol=1 / 127.5)  # every anchor is a 'face': pixelated
    assert all(p.device.type == "cpu" for p in guard.video_runner.models[0].parameters())


def test_text_guard_model_refuses(weights, tmp_path):
    folder, _, _ = weights
    unsafe_guard = make_text_guard(tmp_path / "guard_unsafe", verdict="Unsafe")
    guard = Guardrail("cpu", weights_dir=folder, text_guard_dir=unsafe_guard)
    ok, reason = guard.check_text("a robot")
    assert not ok and "Qwen3Guard" in reason


def test_unsafe_video_is_refused(tmp_path, weights):
    """Fails open without the transformers-5 shim (_image_features_as_tensor): every frame errors and passes."""
    _, guard_folder, _ = weights
    folder = make_guardrail_weights(tmp_path / "Cosmos-Guardrail1", unsafe_video=True)
    result = Guardrail("cpu", weights_dir=folder, text_guard_dir=guard_folder).check_and_blur_video(_video())
    assert isinstance(result, Refusal) and "unsafe" in result.reason.lower()
    assert json.dumps(result.reason)
