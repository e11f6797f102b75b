"""Issue 12's inference items: --load_ema, the listing of checkpoints when an iter_*.pt is missing, the sample inputs
at the guide's paths, the T5 scripts' --max_length/--cache_dir, and a CLI run with the guardrail and refiner on."""

from __future__ import annotations

import json
import pickle
import shlex
from pathlib import Path

import pytest
import test_prompt_refiner  # noqa: F401  (declares torchvision's ops first where only its CUDA build is installed)
import torch
from PIL import Image
from test_inference_assets import EMB_DIM, assets, build_net_kwargs, common_argv, tiny_net  # noqa: F401

from cosmos_predict2.inference import cli
from cosmos_predict2.inference.conditioning import InferenceInputError
from cosmos_predict2.inference.model_loading import LoraFlags, load_base_net, load_lora_net
from cosmos_predict2.lora import AdapterFile, LoraSpec, add_lora, lora_state_dict
from cosmos_predict2.networks import CheckpointMismatchError
from examples import video2world

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
LORA_SPEC = LoraSpec(rank=4, alpha=8, target_modules="q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2")


def _plain(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if not k.startswith("pos_embedder.")}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------------------------
# --load_ema
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ema_files(tmp_path_factory):
    """A full-fine-tuning-like checkpoint whose net.* and net_ema.* differ, our adapter file with different trained
    and EMA adapters, and a reference LoRA checkpoint with net.* and net_ema.* copies."""
    root = tmp_path_factory.mktemp("ema")
    trained, ema = _plain(tiny_net(seed=1)), _plain(tiny_net(seed=2))
    full = root / "full_ft.pt"
    torch.save({"model": {**{"net." + k: v for k, v in trained.items()},
                          **{"net_ema." + k: v for k, v in ema.items()}}}, full)  # fmt: skip
    ema_only_as_file = root / "ema_as_base.pt"
    torch.save({"net." + k: v for k, v in ema.items()}, ema_only_as_file)
    base = root / "base.pt"
    torch.save({"net." + k: v for k, v in trained.items()}, base)

    g = torch.Generator().manual_seed(5)
    net = tiny_net(seed=1)
    add_lora(net, LORA_SPEC)
    lora_keys = lora_state_dict(net)
    lora_trained = {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in lora_keys.items()}
    lora_ema = {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in lora_keys.items()}
    base_info = {"model_size": "tiny", "dit_path": str(base), "net_config": build_net_kwargs()}
    adapter = root / "adapter_ema.pt"
    torch.save(AdapterFile(LORA_SPEC, base_info, lora_trained, lora_ema).to_state(), adapter)
    adapter_no_ema = root / "adapter_no_ema.pt"
    torch.save(AdapterFile(LORA_SPEC, base_info, lora_trained, None).to_state(), adapter_no_ema)
    reference = root / "reference_lora.pt"

    def adapted(weights: dict) -> dict:
        n = tiny_net(seed=1)
        add_lora(n, LORA_SPEC)
        n.load_state_dict(weights, strict=False)
        return n.state_dict()

    torch.save({**{"net." + k: v for k, v in adapted(lora_trained).items()},
                **{"net_ema." + k: v for k, v in adapted(lora_ema).items()}}, reference)  # fmt: skip
    return dict(full=full, base=base, ema_as_base=ema_only_as_file, trained=trained, ema=ema, adapter=adapter,
                adapter_no_ema=adapter_no_ema, reference=reference, lora_trained=lora_trained, lora_ema=lora_ema)


def test_load_ema_on_full_checkpoint(ema_files):
    f = ema_files
    default = load_base_net(f["full"], "tiny", CPU, torch.float32, net_config=build_net_kwargs())
    assert _same(_plain(default.net), f["trained"]) and "EMA" not in default.description
    ema = load_base_net(f["full"], "tiny", CPU, torch.float32, net_config=build_net_kwargs(), load_ema=True)
    assert _same(_plain(ema.net), f["ema"]) and "net_ema" in ema.description
    with pytest.raises(CheckpointMismatchError, match=r"--load_ema: .*base.pt holds no EMA weights \(no net_ema"):
        load_base_net(f["base"], "tiny", CPU, torch.float32, net_config=build_net_kwargs(), load_ema=True)


def _lora_weights(net: torch.nn.Module) -> dict:
    return lora_state_dict(net)


@pytest.mark.parametrize("load_ema, expected", [(None, "lora_ema"), (True, "lora_ema"), (False, "lora_trained")])
def test_load_ema_on_our_adapter_file(ema_files, load_ema, expected):
    """Default (None): the EMA adapters, as before this flag existed; --no_load_ema: the trained ones."""
    flags = LoraFlags(merge=False, load_ema=load_ema)
    loaded = load_lora_net(ema_files["adapter"], None, CPU, torch.float32, flags)
    assert _same(_lora_weights(loaded.net), ema_files[expected])
    assert ("EMA adapters" if expected == "lora_ema" else "trained adapters") in loaded.description


def test_load_ema_on_adapter_without_ema(ema_files):
    loaded = load_lora_net(ema_files["adapter_no_ema"], None, CPU, torch.float32, LoraFlags(merge=False))
    assert _same(_lora_weights(loaded.net), ema_files["lora_trained"]) and "trained adapters" in loaded.description
    with pytest.raises(CheckpointMismatchError, match="no EMA adapters"):
        load_lora_net(ema_files["adapter_no_ema"], None, CPU, torch.float32, LoraFlags(load_ema=True))


@pytest.mark.parametrize("load_ema, expected", [(None, "lora_trained"), (False, "lora_trained"), (True, "lora_ema")])
def test_load_ema_on_reference_lora_checkpoint(ema_files, load_ema, expected):
    """Reference LoRA checkpoints: net.* unless --load_ema, as the reference generates."""
    flags = LoraFlags(alpha=8, merge=False, load_ema=load_ema)
    loaded = load_lora_net(ema_files["reference"], "tiny", CPU, torch.float32, flags, net_config=build_net_kwargs())
    assert _same(_lora_weights(loaded.net), ema_files[expected])


def _argv_with_dit(a, out: Path, dit: Path, *extra: str) -> list[str]:
    argv = common_argv(a, out, *extra)
    argv[argv.index("--dit_path") + 1] = str(dit)
    return argv


def test_load_ema_cli_generates_with_the_ema_weights(assets, ema_files, tmp_path):  # noqa: F811
    ema_out, ref_out = tmp_path / "ema.mp4", tmp_path / "ref.mp4"
    video2world.main(_argv_with_dit(assets, ema_out, ema_files["full"], "--load_ema"))
    video2world.main(_argv_with_dit(assets, ref_out, ema_files["ema_as_base"]))
    assert ema_out.read_bytes() == ref_out.read_bytes()


def test_load_ema_without_ema_fails_before_any_model_loads(assets, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(cli, "build_pipeline", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(CheckpointMismatchError, match="holds no EMA weights"):
        video2world.main(common_argv(assets, tmp_path / "x.mp4", "--load_ema"))
    vae_argv = _argv_with_dit(assets, tmp_path / "x.mp4", assets.vae, "--load_ema")  # a folder: not a .pt file
    with pytest.raises(CheckpointMismatchError, match="not a .pt checkpoint"):
        video2world.main(vae_argv)


def test_load_ema_help_says_the_default():
    base_help = " ".join(cli.build_parser(lora=False).format_help().split())
    assert "--load_ema" in base_help and "Off by default, as in the reference" in base_help
    lora_help = " ".join(cli.build_parser(lora=True).format_help().split())
    assert "our adapter checkpoints use their EMA adapters" in lora_help and "--no_load_ema" in lora_help
    args = cli.build_parser(lora=True).parse_args(["--no_load_ema"])
    assert args.load_ema is False
    with pytest.raises(SystemExit):
        cli.build_parser(lora=True).parse_args(["--load_ema", "--no_load_ema"])


# ---------------------------------------------------------------------------------------------------------------
# a missing iter_*.pt
# ---------------------------------------------------------------------------------------------------------------


def _job(root: Path, iterations: list[int], latest: str | None) -> Path:
    model = root / "checkpoints" / "model"
    model.mkdir(parents=True)
    for it in iterations:
        (model / f"iter_{it:09d}.pt").write_bytes(b"")
    if latest is not None:
        (root / "checkpoints" / "latest_checkpoint.txt").write_text(latest + "\n")
    return model


def _check(assets, argv_extra: list[str], tmp_path: Path, lora: bool = True):  # noqa: F811
    argv = common_argv(assets, tmp_path / "out.mp4", *argv_extra)
    return cli.check_request(cli.build_parser(lora).parse_args(argv), lora)


def test_missing_iteration_lists_the_checkpoints_there(assets, tmp_path):  # noqa: F811
    model = _job(tmp_path / "job", [500, 750, 250], "iter_000000750.pt")
    missing = model / "iter_000001000.pt"
    with pytest.raises(InferenceInputError) as e:
        _check(assets, ["--use_lora", "--dit_path", str(missing)], tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"--dit_path {missing}: not found; {model} holds iter_000000250.pt, iter_000000500.pt, "
                          "iter_000000750.pt")
    assert f"the latest (per {model.parent / 'latest_checkpoint.txt'}) is {model / 'iter_000000750.pt'}" in msg
    with pytest.raises(InferenceInputError, match="holds iter_000000250.pt"):  # the base script too
        _check(assets, ["--dit_path", str(missing)], tmp_path, lora=False)


def test_missing_iteration_other_cases(assets, tmp_path):  # noqa: F811
    empty = _job(tmp_path / "empty", [], None)
    with pytest.raises(InferenceInputError, match="holds no iter_\\*.pt checkpoints$"):
        _check(assets, ["--use_lora", "--dit_path", str(empty / "iter_000000100.pt")], tmp_path)
    many = _job(tmp_path / "many", list(range(100, 1300, 100)), "iter_000000900.pt")
    with pytest.raises(InferenceInputError) as e:
        _check(assets, ["--use_lora", "--dit_path", str(many / "iter_000005000.pt")], tmp_path)
    assert "4 older and iter_000000500.pt" in str(e.value) and "iter_000001200.pt;" in str(e.value)
    nowhere = tmp_path / "nowhere" / "checkpoints" / "model" / "iter_000000100.pt"
    with pytest.raises(InferenceInputError, match="does not exist either"):
        _check(assets, ["--use_lora", "--dit_path", str(nowhere)], tmp_path)
    stale = _job(tmp_path / "stale", [100], "iter_000000200.pt")
    with pytest.raises(InferenceInputError, match="names iter_000000200.pt, which is not in"):
        _check(assets, ["--use_lora", "--dit_path", str(stale / "iter_000000300.pt")], tmp_path)
    with pytest.raises(InferenceInputError, match=r"model\.pt: not found$"):  # not an iter_*.pt: no listing
        _check(assets, ["--dit_path", str(tmp_path / "model.pt")], tmp_path, lora=False)


# ---------------------------------------------------------------------------------------------------------------
# sample inputs at the guide's and our docs' paths
# ---------------------------------------------------------------------------------------------------------------

SAMPLES = ["assets/video2world/input0.jpg", "assets/video2world_cosmos_nemo_assets/output_Digit_Lift_movie.jpg",
           "assets/robot_first_frame.jpg"]  # fmt: skip

# The guide's inference commands (NVIDIA's documentations/post-training_video2world*.md), as written there.
GUIDE_COMMANDS = [
    (False, "--model_size 2B --dit_path checkpoints/posttraining/video2world/"
            "predict2_video2world_training_2b_cosmos_nemo_assets/checkpoints/model/iter_000001000.pt "
            "--prompt 'A video of sks teal robot.' "
            "--input_path assets/video2world_cosmos_nemo_assets/output_Digit_Lift_movie.jpg "
            "--save_path results/cosmos_nemo_assets/generated_video_teal_robot.mp4"),
    (True, "--model_size 2B --dit_path checkpoints/posttraining/video2world_lora/2b_cosmos_nemo_assets/checkpoints/"
           "model/iter_000001000.pt --input_path assets/video2world_cosmos_nemo_assets/output_Digit_Lift_movie.jpg "
           "--prompt 'A video of sks teal robot.' "
           "--save_path output/cosmos_nemo_assets_lora/generated_video_2b_lora.mp4 "
           "--num_gpus 8 --use_lora --lora_rank 16 --lora_alpha 16 "
           "--lora_target_modules q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2 "
           "--offload_guardrail --offload_prompt_refiner"),
    # documentations/inference_video2world.md (the reference's default --input_path; ours has no default)
    (False, "--model_size 2B --input_path assets/video2world/input0.jpg --prompt 'A robot.' "
            "--save_path output/generated_video.mp4"),
    # Our docs (docs/guide.md, docs/quickstart.md, README.md).
    (True, "--model_size 2B --use_lora --dit_path checkpoints/posttraining/video2world_lora/2b_cosmos_nemo_assets/"
           "checkpoints/model/iter_000001000.pt --input_path assets/robot_first_frame.jpg "
           "--prompt 'A video of sks teal robot.' --save_path output/lora.mp4 --disable_guardrail "
           "--disable_prompt_refiner"),
    (True, "--model_size 2B --num_gpus 2 --use_lora --dit_path checkpoints/posttraining/video2world_lora/"
           "2b_cosmos_nemo_assets/checkpoints/model/iter_000001000.pt --batch_input_json assets/batch.json "
           "--disable_guardrail --disable_prompt_refiner"),
]


@pytest.mark.parametrize("path", SAMPLES)
def test_sample_inputs_exist_and_decode(path):
    p = REPO / path
    assert p.is_file() and 3_000 < p.stat().st_size < 100_000
    with Image.open(p) as img:
        assert img.format == "JPEG" and img.size == (1280, 704) and img.mode == "RGB"
        img.load()
    readme = (p.parent / "README.md").read_text(encoding="utf-8")
    assert "stand-in" in readme and "python -m scripts.make_sample_inputs" in readme


def test_sample_inputs_are_what_the_generator_makes(tmp_path):
    from scripts import make_sample_inputs

    make_sample_inputs.main(["--root", str(tmp_path)])
    for rel in [*SAMPLES, "assets/batch.json"]:
        assert (tmp_path / rel).read_bytes() == (REPO / rel).read_bytes(), rel


@pytest.mark.parametrize("lora, command", GUIDE_COMMANDS)
def test_guide_commands_validate_with_the_sample_inputs(lora, command, monkeypatch, tmp_path):
    """check_request on the commands as written, run from the repository root; the checkpoint they name is
    replaced by an empty file in its place (so only the inputs and outputs are checked) and the guardrail/refiner
    weight checks are skipped."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(cli, "check_safety_models", lambda *a, **k: None)
    argv = shlex.split(command)
    if "--dit_path" in argv:
        stand_in = tmp_path / Path(argv[argv.index("--dit_path") + 1]).name
        stand_in.write_bytes(b"")
        argv[argv.index("--dit_path") + 1] = str(stand_in)
    request = cli.check_request(cli.build_parser(lora).parse_args(argv), lora)
    for job in request.jobs:
        assert (REPO / job.input_path).is_file()
    assert request.size_hw == (704, 1280)
    if "--batch_input_json" in argv:
        assert [j.input_path for j in request.jobs] == [e["input_video"] for e in
                                                         json.loads((REPO / "assets/batch.json").read_text())]


# ---------------------------------------------------------------------------------------------------------------
# T5 scripts: --max_length, --cache_dir
# ---------------------------------------------------------------------------------------------------------------


def test_t5_scripts_max_length_and_cache_dir(assets, tmp_path, capsys):  # noqa: F811
    from scripts import get_t5_embeddings, get_t5_embeddings_from_cosmos_nemo_assets

    metas = tmp_path / "metas"
    metas.mkdir()
    long_prompt = " ".join(["robot"] * 40)
    (metas / "a.txt").write_text(long_prompt, encoding="utf-8")
    argv = ["--dataset_path", str(tmp_path), "--cache_dir", str(assets.t5), "--device", "cpu"]
    assert get_t5_embeddings.main([*argv, "--max_length", "8"]) == 0
    with open(tmp_path / "t5_xxl" / "a.pickle", "rb") as f:
        assert pickle.load(f)[0].shape == (8, EMB_DIM)  # truncated to 8 tokens
    (tmp_path / "t5_xxl" / "a.pickle").unlink()
    assert get_t5_embeddings.main(argv) == 0  # default 512: every token kept
    with open(tmp_path / "t5_xxl" / "a.pickle", "rb") as f:
        assert pickle.load(f)[0].shape[0] > 8

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v.mp4").write_bytes(b"")
    nemo_argv = ["--dataset_path", str(tmp_path), "--prompt", long_prompt, "--cache_dir", str(assets.t5),
                 "--max_length", "5", "--device", "cpu"]  # fmt: skip
    assert get_t5_embeddings_from_cosmos_nemo_assets.main(nemo_argv) == 0
    with open(tmp_path / "t5_xxl" / "v.pickle", "rb") as f:
        assert pickle.load(f)[0].shape == (5, EMB_DIM)

    for bad in ("0", "513"):
        with pytest.raises(SystemExit):
            get_t5_embeddings.main([*argv, "--max_length", bad])
        assert "not in 1..512" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        get_t5_embeddings.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--t5_path T5_PATH, --cache_dir T5_PATH" in help_text and "--max_length" in help_text


# ---------------------------------------------------------------------------------------------------------------
# end to end with the guardrail and the prompt refiner
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_cli_with_guardrail_and_refiner(assets, tmp_path, monkeypatch, capsys, device):  # noqa: F811
    """Stand-in weights at the folders the CLI looks in (checkpoints/... under the working directory): a blocked
    prompt in a batch writes nothing and the batch goes on; the passing job writes its mp4 and the refined
    prompt; with --offload_guardrail --offload_prompt_refiner."""
    test_prompt_refiner.ensure_torchvision()
    pytest.importorskip("cosmos_guardrail.cosmos_guardrail")
    from test_guardrail import make_guardrail_weights, make_text_guard

    from cosmos_predict2.inference import guardrail, prompt_refiner

    work = tmp_path / "work"
    make_guardrail_weights(work / guardrail.GUARDRAIL_DIR)
    make_text_guard(work / guardrail.TEXT_GUARD_DIR)
    test_prompt_refiner.make_tiny_reason1(work / prompt_refiner.PROMPT_REFINER_DIR)
    monkeypatch.chdir(work)
    monkeypatch.setattr(prompt_refiner, "MAX_NEW_TOKENS", 6)  # the reference's 512 take ~20 s on a CPU

    blocked, passed = tmp_path / "out" / "blocked.mp4", tmp_path / "out" / "passed.mp4"
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps([
        {"input_video": str(assets.image), "prompt": "a zorblax robot", "output_video": str(blocked)},
        {"input_video": str(assets.image), "prompt": "a robot", "output_video": str(passed)},
    ]))  # fmt: skip
    argv = [a for a in common_argv(assets, tmp_path / "unused.mp4", "--batch_input_json", str(batch),
                                   "--offload_guardrail", "--offload_prompt_refiner")
            if a not in ("--disable_guardrail", "--disable_prompt_refiner")]  # fmt: skip
    argv[argv.index("--device") + 1] = device
    assert video2world.main(argv) == [passed]
    out = capsys.readouterr().out
    assert f"guardrail: the prompt for {blocked} was blocked" in out
    assert not blocked.exists() and not blocked.with_suffix(".refined_prompt.txt").exists()
    assert passed.is_file() and passed.stat().st_size > 0
    refined = passed.with_suffix(".refined_prompt.txt").read_text(encoding="utf-8").strip()
    assert refined == " ".join(["refined"] * 6)
