"""The seams of the package: light configs, one LoRA spec, a network without process groups, parts that own their
files, monitors from a registry, an inference CLI that checks every path before loading a model."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_inference_assets import assets, common_argv  # noqa: F401

from cosmos_predict2.lora import LoraConfigError, LoraSpec
from cosmos_predict2.lora.spec import CONFIG_KEYS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "cosmos_predict2/configs/base/config.py"
GUIDE_2B = "experiment=predict2_video2world_lora_training_2b_cosmos_nemo_assets"


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_composing_a_config_imports_no_peft_no_network_no_training():
    code = f"""
import sys, json
from cosmos_predict2.configs.compose import compose_config
cfg = compose_config({CONFIG!r}, [{GUIDE_2B!r}])
heavy = [m for m in sys.modules if m.split(".")[0] in ("peft", "diffusers", "transformers")
         or m.startswith(("cosmos_predict2.training", "cosmos_predict2.networks", "cosmos_predict2.lora.adapters"))]
print(json.dumps(heavy))
"""
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_configs_import_nothing_from_training_lora_adapters_or_networks():
    """Statically: no module under configs/ imports training/, networks/ or the PEFT-backed LoRA code."""
    forbidden = ("cosmos_predict2.training", "cosmos_predict2.networks", "cosmos_predict2.lora.adapters")
    for path in (ROOT / "cosmos_predict2/configs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(forbidden), f"{path}: from {node.module} import ..."
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(forbidden) for a in node.names), path


def test_networks_import_nothing_from_parallel():
    for path in (ROOT / "cosmos_predict2/networks").rglob("*.py"):
        text = path.read_text()
        assert "cosmos_predict2.parallel" not in text and "cp_group" not in text, path


def test_dryrun_prints_the_guide_lines_with_true_counts_and_reads_no_weight(capsys, tmp_path, monkeypatch):
    from scripts.train import main

    monkeypatch.chdir(ROOT)
    # The 2B experiment's dit_path does not exist here: the dryrun must not need it.
    assert main(["--config", CONFIG, "--dryrun", "--", GUIDE_2B, f"job.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "Adding LoRA adapters: rank=16, alpha=16, targets=['q_proj', 'k_proj', 'v_proj', 'output_proj', " \
           "'mlp.layer1', 'mlp.layer2']" in out
    # One copy of the 2B network: 1,956,413,440 frozen + 22,937,600 LoRA (the reference's line counts its EMA
    # copy too and prints twice these numbers).
    assert "Total parameters: 1.98B, Frozen parameters: 1,956,413,440, Trainable parameters: 22,937,600" in out
    assert not list(tmp_path.iterdir())  # nothing written


def test_dryrun_fails_on_targets_that_match_nothing(capsys, monkeypatch):
    from scripts.train import main

    monkeypatch.chdir(ROOT)
    assert main(["--config", CONFIG, "--dryrun", "--", GUIDE_2B, "model.config.lora_target_modules=to_q,to_k"]) == 2
    err = capsys.readouterr().err
    assert "['to_q', 'to_k'] match no Linear" in err and "q_proj" in err


def test_one_spec_every_representation():
    """Config keys -> spec -> adapter-file dict -> spec -> PEFT config: the same values, dropout included."""
    from cosmos_predict2.configs.model_config import model_config_dict, parse_model_config

    cfg = parse_model_config(model_config_dict(train_architecture="lora", lora_rank=8, lora_alpha=4,
                                               lora_target_modules="q_proj, mlp.layer2", lora_dropout=0.1))  # fmt: skip
    spec = cfg.lora_spec()
    assert (spec.rank, spec.alpha, spec.target_modules, spec.dropout) == (8, 4, ["q_proj", "mlp.layer2"], 0.1)
    assert LoraSpec.from_dict(spec.to_dict()) == spec
    peft = spec.to_peft()
    assert (peft.r, peft.lora_alpha, sorted(peft.target_modules), peft.lora_dropout) == (
        8, 4, ["mlp.layer2", "q_proj"], 0.1)
    assert set(CONFIG_KEYS.values()) <= set(model_config_dict())  # every spec field is a model.config key
    assert LoraSpec.from_dict({"rank": 4, "alpha": 4, "target_modules": ["q_proj"]}).dropout == 0.0  # old files


@pytest.mark.parametrize(("key", "value", "message"), [
    ("lora_rank", 0, "lora_rank must be a positive integer"),
    ("lora_alpha", 0, "lora_alpha must not be 0"),
    ("lora_dropout", 1.5, "lora_dropout must lie in"),
    ("lora_target_modules", " , ", "lora_target_modules is empty"),
])  # fmt: skip
def test_lora_fields_are_checked_once_naming_the_key(key, value, message):
    from cosmos_predict2.configs.model_config import model_config_dict, parse_model_config

    with pytest.raises(LoraConfigError, match=f"model.config.{message}"):
        parse_model_config(model_config_dict(train_architecture="lora", **{key: value}))


def test_context_parallel_is_plugged_into_the_network_from_outside():
    from cosmos_predict2.networks import build_net
    from cosmos_predict2.parallel.context_parallel import (
        ContextParallelFrames,
        UlyssesAttention,
        apply_context_parallel,
    )

    net = build_net("tiny", device="meta")
    assert net.frame_split is None
    apply_context_parallel(net, group=None)
    assert isinstance(net.frame_split, ContextParallelFrames)
    attn = [m for m in net.modules() if hasattr(m, "is_selfattn")]
    assert all(isinstance(m.attention_fn, UlyssesAttention) == m.is_selfattn for m in attn) and attn


def test_frame_split_seam_is_what_the_forward_uses():
    """A split that keeps every frame and gathers by identity leaves the output unchanged."""
    from cosmos_predict2.networks import build_net
    from cosmos_predict2.networks.weights import randomize_

    class KeepAll:
        calls = 0

        def split(self, *tensors):
            KeepAll.calls += 1
            return 0, list(tensors)

        def gather(self, out):
            return out

    net = randomize_(build_net("tiny", crossattn_emb_channels=32), seed=0).eval()
    x, t, ctx = torch.randn(1, 16, 2, 8, 8), torch.rand(1, 2), torch.randn(1, 5, 32)
    with torch.no_grad():
        ref = net(x, t, ctx)
        net.frame_split = KeepAll()
        assert torch.equal(net(x, t, ctx), ref) and KeepAll.calls == 1


def test_monitors_come_from_the_callbacks_registry(tmp_path):
    from cosmos_predict2.training.monitors import IterSpeed, MonitorContext, build_monitors

    ctx = MonitorContext(tmp_path, True, 0, 10, 5)
    monitors = build_monitors({"iter_speed": {"hit_thres": 2, "every_n": 3}, "grad_clip": {"clip_norm": 1.0},
                               "progress_bar": {"enabled": False}, "tensorboard": {"enabled": False}}, ctx)  # fmt: skip
    speed = [m for m in monitors if isinstance(m, IterSpeed)]
    assert len(speed) == 1 and (speed[0].hit_thres, speed[0].every_n) == (2, 3)
    with pytest.raises(ValueError, match="trainer.callbacks.nope: unknown callback"):
        build_monitors({"nope": {}}, ctx)
    with pytest.raises(ValueError, match="trainer.callbacks.iter_speed"):
        build_monitors({"iter_speed": {"hit_thresh": 2}}, ctx)


def test_one_atomic_writer_one_safe_loader(tmp_path):
    from cosmos_predict2.io import CheckpointFileError, atomic_torch_save, safe_load

    path = atomic_torch_save({"a": torch.ones(2)}, tmp_path / "x.pt")
    assert torch.equal(safe_load(path)["a"], torch.ones(2))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointFileError, match="empty.pt is empty"):
        safe_load(tmp_path / "empty.pt")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointFileError, match="x.pt cannot be read.*truncated or corrupt"):
        safe_load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.pt", "x.pt"]  # no temporary left behind


def test_no_duplicate_library_helpers():
    """One atomic writer, one safe torch.load, one DTensor module: no other place in the library does these."""
    allowed = {"torch.load(": {"io.py"}, "os.replace(": {"io.py"}, "full_tensor()": {"dtensor.py"},
               "distribute_tensor(": {"dtensor.py"}}  # fmt: skip
    for path in (ROOT / "cosmos_predict2").rglob("*.py"):
        code = [line for line in path.read_text().splitlines() if "`" not in line]  # not docstring mentions
        for needle, files in allowed.items():
            if any(needle in line for line in code):
                assert path.name in files, f"{path.relative_to(ROOT)} uses {needle}"


@pytest.mark.parametrize(("change", "message"), [
    (("--save_path", "out.avi"), "--save_path .*out.avi: the output is an H.264 video"),
    (("--input_path", "missing.png"), "--input_path missing.png: file not found"),
    (("--input_path", "clip.gif"), "unsupported input type '.gif'"),
    (("--dit_path", "nope.pt"), "--dit_path nope.pt: not found"),
])  # fmt: skip
def test_inference_checks_every_path_before_loading_any_model(assets, tmp_path, monkeypatch, change, message):  # noqa: F811
    from cosmos_predict2.inference import cli
    from examples import video2world

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(cli, "load_base_net", no_model)
    monkeypatch.setattr(cli, "build_pipeline", no_model)
    monkeypatch.chdir(tmp_path)
    argv = common_argv(assets, tmp_path / "out.mp4")
    flag, value = change
    argv[argv.index(flag) + 1] = value
    with pytest.raises(cli.InferenceInputError, match=message):
        video2world.main(argv)


def test_batch_entries_are_checked_before_loading(assets, tmp_path, monkeypatch):  # noqa: F811
    from cosmos_predict2.inference import cli
    from examples import video2world

    monkeypatch.setattr(cli, "build_pipeline", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps([{"input_video": str(assets.image), "prompt": "a", "output_video": "ok.mp4"},
                                 {"input_video": str(assets.image), "prompt": "b", "output_video": "bad.gif"}]))
    argv = common_argv(assets, tmp_path / "out.mp4", "--batch_input_json", str(batch))
    with pytest.raises(cli.InferenceInputError, match="--batch_input_json entry bad.gif"):
        video2world.main(argv)
