"""Context parallelism and FSDP2 on CPU with torchrun + gloo: same numbers as one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_inference_assets import assets, common_argv  # noqa: F401

from cosmos_predict2.networks import build_net
from cosmos_predict2.networks.weights import randomize_

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", *args]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # show how far the ranks got
        out = "".join(t.decode(errors="replace") if isinstance(t, bytes) else t for t in (e.stdout, e.stderr) if t)
        raise AssertionError(f"torchrun timed out after {timeout} s; output so far:\n{out[-4000:]}") from None
    # A rank's own error comes before torchrun's report and can run to many lines (dispatcher errors): show both ends.
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[:3000] + "\n[...]\n" + proc.stderr[-2000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize(("device", "backend", "expected_device"),
                         [(None, "nccl", "cuda:1"), ("auto", "nccl", "cuda:1"), ("cpu", "gloo", "cpu"),
                          ("cuda", "nccl", "cuda:1")])  # fmt: skip
def test_process_group_follows_the_requested_device(monkeypatch, device, backend, expected_device):
    """On a GPU machine `--device cpu` under torchrun must use gloo (NCCL cannot move CPU tensors; seen on 2 H200s)."""
    import torch.distributed as dist

    from cosmos_predict2 import parallel

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("set_device", i))
    monkeypatch.setattr(dist, "is_initialized", lambda: "backend" in calls)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.setdefault("backend", backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    info = parallel.init_distributed(device)
    assert calls["backend"] == backend and str(info.device) == expected_device and info.rank == 1
    assert calls.get("set_device") == (1 if backend == "nccl" else None)


@pytest.mark.parametrize("already_joined", [False, True])
def test_shutdown_leaves_only_the_group_init_distributed_joined(monkeypatch, already_joined):
    """A torchrun job that exits with its gloo group alive can abort at interpreter exit (`terminate called without
    an active exception`, seen in CI after "Done with training."): the group init_distributed joined is destroyed;
    one the caller made stays for the caller."""
    import torch.distributed as dist

    from cosmos_predict2 import parallel

    state = {"joined": already_joined, "destroyed": 0}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: state["joined"])
    monkeypatch.setattr(dist, "init_process_group", lambda backend: state.update(joined=True))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: state.update(joined=False, destroyed=1))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    proc = parallel.init_distributed("cpu")
    assert proc.owns_process_group is not already_joined
    parallel.shutdown_distributed(proc)
    assert state == {"joined": already_joined, "destroyed": int(not already_joined)}


def test_end_process_exits_one_process_normally(monkeypatch):
    from cosmos_predict2.parallel import end_process

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        end_process(3)
    assert exit_info.value.code == 3


def test_end_process_of_a_rank_finishes_threads_exit_handlers_and_output(tmp_path):
    """A torchrun rank skips the interpreter's teardown (gloo's threads can abort it), not what a normal exit does
    before it: non-daemon threads finish, atexit handlers run, buffered output is written."""
    script = tmp_path / "rank.py"
    script.write_text(f"""
import atexit, pathlib, sys, threading, time
from cosmos_predict2.parallel import end_process
out = pathlib.Path({str(tmp_path)!r})
atexit.register(lambda: (out / "atexit").write_text("ran"))
threading.Thread(target=lambda: (time.sleep(0.3), (out / "thread").write_text("done"))).start()
sys.stdout.write("no newline yet")
end_process(3)
raise AssertionError("end_process returned")
""")
    env = {**os.environ, "WORLD_SIZE": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "no newline yet" and not proc.stderr
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"


def test_all_to_all_is_its_own_backward_and_runs_without_autograd(monkeypatch):
    """The exchange's adjoint is the exchange (a transpose of (rank, part)): stood in here by a flip of dim 0, which is
    also its own inverse and adjoint. Under inference mode too (torch 2.11's autograd functional collective had no
    kernel there: CP inference crashed on an H200)."""
    import torch.distributed as dist

    from cosmos_predict2.parallel.context_parallel import _all_to_all

    calls = []

    def flip_exchange(recv, send, group=None):
        calls.append(group)
        recv.copy_(send.flip(0))

    monkeypatch.setattr(dist, "all_to_all_single", flip_exchange)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _all_to_all(t, "g"), (x,))
    g = torch.randn(4, 3, dtype=torch.float64)
    calls.clear()
    (_all_to_all(x, "g") * g).sum().backward()
    assert torch.equal(x.grad, g.flip(0)) and calls == ["g", "g"]
    with torch.inference_mode():
        assert torch.equal(_all_to_all(x.detach(), "g"), x.detach().flip(0))
    with torch.no_grad():
        assert not _all_to_all(x, "g").requires_grad


def test_context_parallel_matches_single_process(tmp_path):
    _torchrun(2, ["tests/dist_worker.py", str(tmp_path / "cp.pt")])
    got = torch.load(tmp_path / "cp.pt", weights_only=True)

    net = randomize_(build_net("tiny", crossattn_emb_channels=32), seed=3)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(1, 16, 4, 8, 12, generator=g), torch.rand(1, 4, generator=g)
    ctx = torch.randn(1, 7, 32, generator=g)
    cond = torch.zeros(1, 1, 4, 8, 12)
    cond[:, :, :1] = 1
    out = net(x, t, ctx, cond)
    out.square().mean().backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    # fp32; only the attention's summation order differs between one 4-frame SDPA and the all-to-all version.
    torch.testing.assert_close(got["out"], out.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["grads"], grads, rtol=1e-4, atol=1e-6)
    assert got["gloo_threads_left"] == 0  # the group the CP attention ran on was freed


TRAIN = ["-m", "scripts.train", "--config=cosmos_predict2/configs/base/config.py", "--"]


def _train_args(dataset_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "experiment=predict2_video2world_lora_training_tiny_example",
        f"dataloader_train.dataset.dataset_dir={dataset_dir}",
        "dataloader_train.dataset.num_frames=13", f"job.root={root}", "checkpoint.save_iter=2",
        "trainer.callbacks.progress_bar.enabled=false", "trainer.callbacks.tensorboard.enabled=false", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dataset13(tmp_path_factory) -> Path:
    from tests.data_helpers import make_dataset

    return make_dataset(tmp_path_factory.mktemp("ds13"), {"a": 13, "b": 17, "c": 14, "d": 20}, 64, 64)


@pytest.mark.slow
def test_torchrun_lora_with_context_parallel_matches_one_process_and_resumes(dataset13, tmp_path):
    from cosmos_predict2.configs.compose import compose_config
    from cosmos_predict2.training.trainer import train

    ckpt = "posttraining/video2world_lora/tiny_example/checkpoints"
    cfg = compose_config("cosmos_predict2/configs/base/config.py",
                         _train_args(dataset13, tmp_path / "one", "trainer.max_iter=4"))  # fmt: skip
    train(cfg)
    # CP=2 on 2 ranks: one data-parallel replica reading the same samples with the same step seeds. With selective
    # checkpointing, as the guide's CP recipes run: its recompute repeats the all-to-alls under the policy's mode.
    _torchrun(2, [*TRAIN, *_train_args(dataset13, tmp_path / "cp", "trainer.max_iter=4",
                                       "model_parallel.context_parallel_size=2",
                                       "model.config.activation_checkpointing=selective")])  # fmt: skip
    one = torch.load(tmp_path / "one" / ckpt / "model/iter_000000004.pt", weights_only=True)
    two = torch.load(tmp_path / "cp" / ckpt / "model/iter_000000004.pt", weights_only=True)
    assert one["lora_config"]["rank"] == two["lora_config"]["rank"]
    tensors = sorted(k for k in one if k != "lora_config")
    assert tensors == sorted(k for k in two if k != "lora_config") and tensors
    for k in tensors:
        # fp32, but reduction orders differ (all-to-all attention, FSDP reduce-scatter) and Adam's normalisation
        # turns ~1e-7 gradient differences on near-zero gradients into ~1e-5 steps: compare at the tensor's scale.
        assert (two[k] - one[k]).abs().max() <= 2e-3 * one[k].abs().max(), k

    proc = _torchrun(2, [*TRAIN, *_train_args(dataset13, tmp_path / "cp", "trainer.max_iter=6",
                                              "model_parallel.context_parallel_size=2")])  # fmt: skip
    assert "iterations 4 -> 6" in proc.stdout + proc.stderr
    assert (tmp_path / "cp" / ckpt / "latest_checkpoint.txt").read_text().strip() == "iter_000000006.pt"


@pytest.mark.slow
def test_torchrun_full_finetune_fsdp2_writes_whole_network(dataset13, tmp_path):
    _torchrun(2, [*TRAIN, *_train_args(dataset13, tmp_path, "experiment=predict2_video2world_training_tiny_example",
                                       "trainer.max_iter=2", "model.config.fsdp_shard_size=2")])  # fmt: skip
    files = list(tmp_path.rglob("model/iter_000000002.pt"))
    assert len(files) == 1
    sd = torch.load(files[0], weights_only=True)
    expected = build_net("tiny").state_dict()
    for name, value in expected.items():  # whole (gathered) tensors, not FSDP shards
        assert tuple(sd["net." + name].shape) == tuple(value.shape), name


@pytest.mark.slow
def test_context_parallel_inference_script_matches_one_gpu(assets, tmp_path, monkeypatch):  # noqa: F811
    from cosmos_predict2.data.video import read_video_window
    from cosmos_predict2.inference import cli
    from examples import video2world
    from tests.cp_inference_worker import keep_decoded_video

    one, two = tmp_path / "one.mp4", tmp_path / "two.mp4"
    argv = common_argv(assets, one)
    argv[argv.index("--num_frames") + 1] = "13"  # 4 latent frames: divisible by 2 ranks
    monkeypatch.setattr(cli, "save_video", keep_decoded_video(cli.save_video))
    video2world.main(argv)
    argv[argv.index("--save_path") + 1] = str(two)
    _torchrun(2, ["tests/cp_inference_worker.py", *argv, "--num_gpus", "2"])
    assert read_video_window(two, 0, 13)[0].shape == (13, 32, 64, 3)  # rank 0 wrote the whole video
    a, b = (torch.load(f"{p}.pt", weights_only=True) for p in (one, two))
    # Compare the decoded videos, not the mp4s: H.264 (CRF 23) on this tiny random video is ~100 grey levels off
    # its input, and +-1 flips of ~10 of its 79,872 uint8 values (what fp32 rounding does) change the decoded mp4
    # by up to 12-48 levels in about half of the cases (measured; often the last frame only). Same seed and noise;
    # the networks agree to fp32 rounding (bit for bit with the DiT in fp64): max |diff| measured 9.3e-6 in
    # [-1, 1]; a wrong frame offset on rank 1 gives 0.34.
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["model.config.fsdp_shard_size=2", "model_parallel.context_parallel_size=2"])
def test_validation_on_two_ranks_all_compute_and_rank0_writes_the_same_numbers(tmp_path, parallel):
    """FSDP2 (full fine-tuning) and context parallelism (LoRA) on 2 gloo ranks: every rank takes part in the
    evaluation's forwards (a rank that did not would hang the other), one eval.jsonl line per evaluation, numbers
    as in one process (up to the reduction order of the parallel run)."""
    from cosmos_predict2.configs.compose import compose_config
    from cosmos_predict2.training.trainer import job_dir_of, train
    from tests.data_helpers import make_dataset
    from tests.test_validation import CONFIG, FAST, LORA, STEMS, records

    experiment = "predict2_video2world_training_tiny_example" if "fsdp" in parallel else LORA
    dataset_dir = make_dataset(tmp_path / "ds13", {s: 13 for s in STEMS}, 64, 64)  # 4 latent frames: CP=2 splits
    args = [f"experiment={experiment}", f"dataloader_train.dataset.dataset_dir={dataset_dir}",
            "dataloader_train.dataset.num_frames=13",
            "trainer.callbacks.progress_bar.enabled=false", "trainer.callbacks.tensorboard.enabled=false",
            "dataloader_val=heldout", "dataloader_val.fraction=0.3", "trainer.run_validation=true",
            "trainer.validation_iter=2", "checkpoint.save_iter=2", "trainer.validation.generate_every=2",
            "trainer.validation.raise_errors=true", "trainer.max_iter=4", *FAST]  # fmt: skip
    one = compose_config(CONFIG, [*args, f"job.root={tmp_path / 'one'}"])
    train(one)
    _torchrun(2, [*TRAIN, *args, f"job.root={tmp_path / 'two'}", parallel])
    expected = records(job_dir_of(one))
    got = records(job_dir_of(compose_config(CONFIG, [*args, f"job.root={tmp_path / 'two'}"])))
    assert [r["iteration"] for r in got] == [2, 4] and "val/delta_psnr" in got[1]
    # FSDP here is 2 data-parallel ranks (twice the batch): only the base model's numbers are comparable. Context
    # parallelism is one data-parallel replica: the whole run is.
    keys = ("val/loss_base", "val/psnr_base", "val/ssim_base")
    keys += () if "fsdp" in parallel else ("val/loss", "val/psnr", "val/ssim")
    for a, b in zip(expected, got):
        for key in keys:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=2e-3), key
