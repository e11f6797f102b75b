"""Low-memory training modes (docs/memory.md): activation offload, frozen-weight streaming, the memory planner.

Every mode must compute the same loss and gradients as the default one, bit for bit: they only change where
tensors wait between the forward and the backward.
"""

from __future__ import annotations

import functools

import pytest
import torch

from cosmos_predict2.configs.model_config import ModelConfigError, parse_model_config
from cosmos_predict2.lora import add_lora
from cosmos_predict2.lora.spec import LoraSpec
from cosmos_predict2.networks import build_net
from cosmos_predict2.networks.weights import randomize_
from cosmos_predict2.training.model import Video2WorldModel, model_config_dict

TINY = dict(crossattn_emb_channels=32)
LORA = LoraSpec(rank=4, alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "output_proj", "mlp.layer1",
                                                  "mlp.layer2"])  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine their spinning costs 5x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(T: int = 3, H: int = 8, W: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, T, H, W, generator=g)
    t = torch.rand(1, T, generator=g)
    ctx = torch.randn(1, 7, 32, generator=g)
    cond = torch.zeros(1, 1, T, H, W)
    cond[:, :, :1] = 1.0
    return x, t, ctx, cond


def _tiny_net(lora: bool, seed: int = 5, **kwargs):
    net = randomize_(build_net("tiny", **TINY, **kwargs), seed=seed)
    if lora:
        net.requires_grad_(False)
        torch.manual_seed(seed)
        add_lora(net, LORA, adapter_dtype=torch.float32, compute_dtype="base")  # the training default
        with torch.no_grad():  # PEFT zero-initialises lora_B: make the adapters matter
            for name, p in net.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(hash(name) % 2**31))
    return net


def _loss_and_grads(net) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = net(*_inputs()).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}


def _assert_same(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0]), (a[0], b[0])
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        assert torch.equal(a[1][name], b[1][name]), name


# --- config ----------------------------------------------------------------------------------------------------


def test_memory_mode_config_checks():
    assert parse_model_config(model_config_dict()).memory_mode == "default"
    with pytest.raises(ModelConfigError, match="memory_mode"):
        parse_model_config(model_config_dict(memory_mode="tiny_gpu"))
    with pytest.raises(ModelConfigError, match="activation_checkpointing"):
        parse_model_config(model_config_dict(memory_mode="low", activation_checkpointing="none",
                                             train_architecture="lora"))  # fmt: skip
    with pytest.raises(ModelConfigError, match="train_architecture=lora"):
        parse_model_config(model_config_dict(memory_mode="stream_weights"))


def test_memory_mode_is_a_runtime_net_kwarg_not_recorded_as_the_base():
    cfg = model_config_dict(model_size="tiny", dit_path="", train_architecture="lora", memory_mode="low")
    model = Video2WorldModel(cfg)
    assert model.net_kwargs()["activation_offload"] is True
    default = Video2WorldModel(model_config_dict(model_size="tiny", dit_path="", train_architecture="lora"))
    assert default.net_kwargs()["activation_offload"] is False
    assert model.base_info()["net_config"] == default.base_info()["net_config"]
    assert "activation_offload" not in model.base_info()["net_config"]


# --- activation offload ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ckpt", ["full", "selective", "nested"])
@pytest.mark.parametrize("lora", [False, True])
def test_activation_offload_same_loss_and_gradients(ckpt, lora):
    reference = _loss_and_grads(_tiny_net(lora, activation_checkpointing=ckpt))
    net = _tiny_net(lora, activation_checkpointing=ckpt, activation_offload=True)
    net.activation_offload.min_bytes = 4096  # the tiny x is 12 KiB: offload it, keep the small emb/adaLN tensors
    offloaded = _loss_and_grads(net)
    _assert_same(reference, offloaded)
    stats = net.activation_offload.stats
    # one x per block went to the host; block 1's unpack prefetched block 0's x, block 1's own was loaded on demand
    assert stats["offloaded"] == len(net.blocks), stats
    assert stats["prefetched"] == len(net.blocks) - 1 and stats["loaded_on_demand"] == 1, stats


@pytest.mark.parametrize("lora", [False, True])
def test_activation_offload_also_moves_what_selective_checkpointing_keeps(monkeypatch, lora):
    """Selective checkpointing's kept attention outputs wait in host memory too and come back for the recompute:
    the same bits. With every attention kept (min keys 0): per block x, the self- and the cross-attention output."""
    from cosmos_predict2.networks import dit

    monkeypatch.setattr(dit, "SELECTIVE_MIN_KEYS", 0)
    reference = _loss_and_grads(_tiny_net(lora, activation_checkpointing="selective"))
    net = _tiny_net(lora, activation_checkpointing="selective", activation_offload=True)
    net.activation_offload.min_bytes = 4096  # x and the attention outputs (12-18 KiB), not the softmax statistics
    _assert_same(reference, _loss_and_grads(net))
    stats = net.activation_offload.stats
    assert stats["offloaded"] == 3 * len(net.blocks), stats
    assert stats["kept_prefetched"] == 2 * (len(net.blocks) - 1), stats  # the last block's were not prefetched


def test_kept_outputs_reads_both_storage_layouts():
    """Selective checkpointing's storage maps each op to a list of its calls' outputs up to PyTorch 2.11 (the GPU
    machine's) and to a {call index: outputs} dict in 2.13: both yield every wrapped leaf, in call order."""
    from torch.utils.checkpoint import _VersionWrapper

    from cosmos_predict2.networks.offload import kept_outputs

    a, b, c = (_VersionWrapper(torch.full((2,), float(i))) for i in range(3))
    op1, op2 = object(), object()
    as_lists = {op1: [a, (b, 3)], op2: [[c]]}
    as_dicts = {op1: {0: a, 1: (b, 3)}, op2: {0: [c]}}
    for storage in (as_lists, as_dicts):
        assert list(kept_outputs(storage, _VersionWrapper)) == [a, b, c]


def test_nested_checkpointing_runs_self_attention_twice_with_the_same_gradients():
    """nested = full checkpointing plus one checkpoint per sub-layer: the same ops, so the same bits. The
    sub-layers run a third time (their own recompute; the block's recompute stops before the MLP), but the
    self-attention kernel does not: the block's recompute hands its output to the sub-layer's recompute
    (AttentionHandoff), so it runs twice per step, as under full checkpointing. Cross-attention (over the text) is
    recomputed a third time: it is cheap."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountAttention(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += "attention" in str(func) and "backward" not in str(func)
            return func(*args, **(kwargs or {}))

    results, calls, kernels = [], [], []
    for ckpt in ("full", "nested"):
        net = _tiny_net(True, activation_checkpointing=ckpt)
        count = {"self_attn": 0, "cross_attn": 0, "mlp": 0}
        for name in count:
            getattr(net.blocks[0], name).register_forward_hook(lambda *_, n=name, c=count: c.__setitem__(n, c[n] + 1))
        with CountAttention() as mode:
            results.append(_loss_and_grads(net))
        calls.append(count)
        kernels.append(mode.calls)
    _assert_same(*results)
    assert calls == [{"self_attn": 2, "cross_attn": 2, "mlp": 2}, {"self_attn": 3, "cross_attn": 3, "mlp": 2}]
    blocks = len(net.blocks)
    assert kernels == [4 * blocks, 5 * blocks]  # per block: self 2 + cross 2 (full); self 2 + cross 3 (nested)


def test_activation_offload_needs_checkpointing():
    with pytest.raises(ValueError, match="activation_checkpointing"):
        build_net("tiny", activation_offload=True)


# --- host memory of the exact size (networks/host_memory.py) ----------------------------------------------------

def test_host_buffer_pool_gives_exact_sizes_and_reuses_freed_buffers():
    from cosmos_predict2.networks.host_memory import HostBufferPool, storage_bytes

    t = torch.randn(6, 5, 4).transpose(0, 2)  # non-contiguous strides, as an attention output can be
    pool = HostBufferPool(pin=False)
    host = pool.empty_strided(t.shape, t.stride(), t.dtype)
    assert host.shape == t.shape and host.stride() == t.stride() and host.dtype == t.dtype
    host.copy_(t)
    assert torch.equal(host, t)
    assert pool.allocated_bytes == storage_bytes(t.shape, t.stride(), t.dtype) == 120 * 4  # no rounding up
    first = host.data_ptr()
    again = pool.empty_strided(t.shape, t.stride(), t.dtype)  # the first is still in use: a second buffer
    assert again.data_ptr() != first and pool.allocated_bytes == 2 * 480
    del host
    assert pool.cached_bytes() == 480
    reused = pool.empty_strided(t.shape, t.stride(), t.dtype)
    assert reused.data_ptr() == first and pool.allocated_bytes == 2 * 480 and pool.cached_bytes() == 0
    assert storage_bytes((3, 0), (1, 1), torch.float32) == 0


def test_activation_offload_allocates_once_and_reuses_host_memory():
    net = _tiny_net(True, activation_checkpointing="full", activation_offload=True, num_blocks=3)
    net.activation_offload.min_bytes = 4096
    _loss_and_grads(net)
    after_one = net.activation_offload.host_bytes()
    assert after_one > 0
    for _ in range(2):
        _loss_and_grads(net)
    assert net.activation_offload.host_bytes() == after_one  # later steps reuse the first step's buffers


def test_weight_streaming_moves_the_frozen_weights_into_one_host_buffer():
    from cosmos_predict2.networks.streaming import apply_weight_streaming

    net = _tiny_net(True, activation_checkpointing="full", num_blocks=3)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    streamer = apply_weight_streaming(net, "cpu")
    buffer = streamer._buffer
    start, end = buffer.data_ptr(), buffer.data_ptr() + buffer.numel()
    frozen = [p for block in streamer.frozen for p in block]
    assert all(start <= p.data_ptr() and p.data_ptr() + p.numel() * p.element_size() <= end for p in frozen)
    assert sum(p.numel() * p.element_size() for p in frozen) <= buffer.numel() < sum(
        p.numel() * p.element_size() + 64 for p in frozen)  # one allocation, cache-line aligned, nothing rounded up
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())


# --- frozen-weight streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ckpt", ["full", "selective", "nested"])
def test_weight_streaming_same_loss_and_gradients(ckpt):
    from cosmos_predict2.networks.streaming import apply_weight_streaming

    reference_net = _tiny_net(True, activation_checkpointing=ckpt, num_blocks=4)
    reference = [_loss_and_grads(reference_net) for _ in range(2)]  # the second step accumulates gradients
    net = _tiny_net(True, activation_checkpointing=ckpt, num_blocks=4)
    streamer = apply_weight_streaming(net, "cpu", ahead=1)
    streamed_names = {n for n, p in net.named_parameters() if not p.requires_grad and n.startswith("blocks.")}
    assert streamed_names and not any("lora_" in n for n in streamed_names)
    assert all(any(n.endswith(k) for n in streamed_names) for k in ("q_proj.base_layer.weight", "q_norm.weight"))
    assert all(streamer.is_offloaded(i) for i in range(4))
    streamer.trace = []
    for step in range(2):
        _assert_same(reference[step], _loss_and_grads(net))
    one_step = [("load", 0), ("load", 1), ("drop", 0), ("load", 2), ("drop", 1), ("load", 3), ("drop", 2),  # fwd
                ("load", 2), ("drop", 3), ("load", 1), ("drop", 2), ("load", 0), ("drop", 1)]  # bwd recompute
    # the second step starts where the first's backward ended: block 0 is still resident
    assert streamer.trace == one_step + one_step[1:], streamer.trace
    assert [streamer.is_offloaded(i) for i in range(4)] == [False, True, True, True]


def test_weight_streaming_forward_leaves_blocks_offloaded():
    from cosmos_predict2.networks.streaming import apply_weight_streaming

    net = _tiny_net(True, activation_checkpointing="full", num_blocks=4)
    with torch.no_grad():
        expected = net(*_inputs())
    streamer = apply_weight_streaming(net, "cpu", ahead=2)
    streamer.trace = []
    resident = []
    for block in net.blocks:  # how many blocks hold device copies while each block runs
        block.register_forward_hook(lambda *_: resident.append(sum(not streamer.is_offloaded(i) for i in range(4))))
    with torch.no_grad():
        out = net(*_inputs())
    assert torch.equal(out, expected)
    assert max(resident) <= 3  # the running block + ahead=2
    assert [streamer.is_offloaded(i) for i in range(4)] == [True, True, True, False]
    with pytest.raises(ValueError, match="already"):
        apply_weight_streaming(net, "cpu")


# --- the training model --------------------------------------------------------------------------------------


def _model(memory_mode: str, ckpt: str = "full", storage: str = "bf16") -> Video2WorldModel:
    cfg = model_config_dict(model_size="tiny", dit_path="", train_architecture="lora", lora_rank=4, lora_alpha=4,
                            precision="fp32", tokenizer_type="tiny_random", activation_checkpointing=ckpt,
                            memory_mode=memory_mode, hash_base_checkpoint=False,
                            base_weight_storage=storage)  # fmt: skip
    model = Video2WorldModel(cfg)
    model.setup("cpu", seed=3)
    return model


def _training_step(model: Video2WorldModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    batch = {"latents": torch.randn(1, 16, 3, 8, 8, generator=g), "t5_text_embeddings": torch.randn(1, 512, 32,
                                                                                                 generator=g)}
    for name, p in model.net.named_parameters():  # PEFT's zero lora_B would make most adapter gradients zero
        if "lora_B" in name:
            p.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    loss, _ = model.training_step(batch, iteration=0)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.net.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["offload_activations", "stream_weights", "low"])
def test_training_step_memory_modes_equal_default(mode):
    reference = _training_step(_model("default"))
    model = _model(mode)
    assert (model.net.activation_offload is not None) == (mode != "stream_weights")
    assert (getattr(model.net, "weight_streamer", None) is not None) == (mode != "offload_activations")
    _assert_same(reference, _training_step(model))


# --- the memory planner ----------------------------------------------------------------------------------------

LORA_TARGETS = "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"


@functools.cache
def _counts(size: str, rank: int, lora_compute_dtype: str = "base"):
    from cosmos_predict2.training.memory_plan import NetCounts

    model = Video2WorldModel(model_config_dict(model_size=size, dit_path="", train_architecture="lora",
                                               lora_rank=rank, lora_alpha=rank, lora_target_modules=LORA_TARGETS,
                                               lora_compute_dtype=lora_compute_dtype))  # fmt: skip
    return NetCounts.of(model.meta_net_with_adapters())  # the meta device: 14B is never allocated


@pytest.mark.parametrize("lora_compute_dtype", ["base", "float32"])
def test_planner_predicts_the_measured_rows_within_10_percent(lora_compute_dtype):
    """Both adapter paths: the fused default (MEASURED) and PEFT's fp32 forward (MEASURED_FP32_ADAPTERS), each
    network counted with its own adapters (NetCounts.fp32_adapters)."""
    from cosmos_predict2.training import memory_plan as mp

    rows = mp.MEASURED if lora_compute_dtype == "base" else mp.MEASURED_FP32_ADAPTERS
    counts = {size: _counts(size, rank, lora_compute_dtype) for size, rank in {(r[0], r[1]) for r in rows}}
    assert all(c.fp32_adapters == (lora_compute_dtype == "float32") for c in counts.values())
    assert sum(r[-1] is not None for r in rows) >= 3  # peaks measured with the current code
    for size, _rank, latent, ckpt, mode, seconds, peak in rows:
        predicted = mp.predict_peak_gib(counts[size], latent, ckpt, mode)
        if peak is not None:  # None: measured before a change of the working set (memory_plan.MEASURED)
            assert abs(predicted / peak - 1) < 0.10, (size, latent, ckpt, mode, predicted, peak)
        if seconds is not None:
            predicted_s = mp.predict_seconds(counts[size], latent, ckpt, mode)
            assert abs(predicted_s / seconds - 1) < 0.10, (size, latent, ckpt, mode, predicted_s, seconds)


def test_planner_orders_the_modes():
    from cosmos_predict2.training.memory_plan import LATENT_720P, choose, plan

    rows = plan(_counts("14B", 32), LATENT_720P)
    peak = {(p.memory_mode, p.checkpointing): p.peak_gib for p in rows}
    assert peak[("low", "full")] < peak[("offload_activations", "full")] < peak[("default", "full")]
    assert peak[("low", "full")] < peak[("stream_weights", "full")] < peak[("default", "full")]
    assert choose(rows, 1.0) is None
    low = choose(rows, 48.0)  # 14B 720p on 48 GiB: low memory, whose pinned buffers need the host's memory
    assert low.memory_mode == "low" and choose(rows, 48.0, host_memory_gib=32.0) is None
    big = choose(rows, 10_000.0)  # everything fits: the default mode wins ties with the copy-hiding modes
    assert (big.memory_mode, big.checkpointing) == ("default", "selective")


def test_planner_keeps_as_many_attention_outputs_as_fit_and_auto_sets_that_budget():
    """14B 720p on a 120 GiB GPU with little host memory (no pinned buffers): keeping every block's self-attention
    output does not fit (it does on an H200 since 2026-12-04's smaller working set), full checkpointing does;
    selective checkpointing with a budget for K blocks is faster than full and fits, the network given that budget
    keeps exactly K blocks' outputs, and memory_mode=auto sets the budget."""
    from cosmos_predict2.configs.compose import compose_config
    from cosmos_predict2.configs.lazy import instantiate
    from cosmos_predict2.training.memory_plan import LATENT_720P, choose, plan, tokens

    counts = _counts("14B", 32)
    gpu = 120.0
    rows = plan(counts, LATENT_720P, gpu_memory_gib=gpu, host_memory_gib=16.0)
    chosen = choose(rows, gpu, 16.0)
    full = next(p for p in rows if (p.memory_mode, p.checkpointing) == ("default", "full"))
    assert chosen.memory_mode == "default" and chosen.checkpointing == "selective", chosen
    assert 0 < chosen.kept_blocks < counts.num_blocks and chosen.s_per_step < full.s_per_step
    assert chosen.fits(gpu, 16.0) and "selective_checkpoint_budget_gib=" in chosen.overrides()

    net = build_net("14B", device="meta", activation_checkpointing="selective",
                    selective_checkpoint_budget_gib=chosen.budget_gib)  # fmt: skip
    x = torch.empty(1, LATENT_720P[0], tokens(counts, LATENT_720P) // LATENT_720P[0], counts.dim, device="meta",
                    dtype=torch.bfloat16)  # fmt: skip
    assert net._blocks_keeping_attention(x) == chosen.kept_blocks

    cfg = compose_config("cosmos_predict2/configs/base/config.py", [
        "experiment=predict2_video2world_lora_training_14b_cosmos_nemo_assets", "model.config.memory_mode=auto"])
    model = instantiate(cfg.model)
    model.resolve_memory_mode(LATENT_720P, gpu_memory_gib=gpu, host_memory_gib=16.0)
    c = model.config
    assert (c.memory_mode, c.activation_checkpointing, c.selective_checkpoint_budget_gib) == (
        "default", "selective", chosen.budget_gib)


def test_dryrun_names_a_mode_and_auto_picks_it(capsys, monkeypatch):
    import re

    from cosmos_predict2.configs.compose import compose_config
    from cosmos_predict2.configs.lazy import instantiate
    from cosmos_predict2.training import memory_plan
    from cosmos_predict2.training.memory_plan import latent_shape_of
    from scripts.train import main

    monkeypatch.setattr(memory_plan, "host_memory_gib", lambda: 64.0)  # the same answer on any test machine
    experiment = ["experiment=predict2_video2world_lora_training_2b_cosmos_nemo_assets"]
    config = "cosmos_predict2/configs/base/config.py"
    assert main([f"--config={config}", "--dryrun", "--gpu_memory_gib", "24", "--", *experiment]) == 0
    out = capsys.readouterr().out
    named = re.search(r"Fastest mode that fits: model.config.memory_mode=(\w+) "
                      r"model.config.activation_checkpointing=(\w+)", out)  # fmt: skip
    assert named, out[-2000:]
    # 2B 720p on 24 GiB: offloading the block inputs and the kept self-attention outputs lets selective
    # checkpointing fit (predicted 17.0 GiB; the default mode's 33.8 GiB does not)
    assert named.groups() == ("offload_activations", "selective")

    cfg = compose_config(config, [*experiment, "model.config.memory_mode=auto"])
    model = instantiate(cfg.model)
    model.resolve_memory_mode(latent_shape_of(cfg), gpu_memory_gib=24, host_memory_gib=64.0)
    assert (model.config.memory_mode, model.config.activation_checkpointing) == named.groups()


# --- on a GPU (skipped without one): the side streams, pinned memory and events ------------------------------

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@CUDA
@pytest.mark.parametrize("ckpt", ["full", "selective", "nested"])
def test_cuda_memory_modes_same_bits(ckpt, monkeypatch):
    """The modes on a GPU: bf16 base, side-stream copies, pinned host memory. The same bits as the default mode
    whenever the default mode reproduces its own bits (GPU attention backward kernels may not). Every attention
    output is kept under selective checkpointing (min keys 0), so that its host copies are exercised too."""
    from cosmos_predict2.networks import dit
    from cosmos_predict2.networks.streaming import apply_weight_streaming

    monkeypatch.setattr(dit, "SELECTIVE_MIN_KEYS", 0)

    def run(offload: bool, stream: bool):
        net = _tiny_net(True, activation_checkpointing=ckpt, activation_offload=offload, num_blocks=4)
        if offload:
            net.activation_offload.min_bytes = 4096  # x is 96 KiB here: offload it, not the small tensors
        net = net.to(torch.bfloat16)
        if stream:
            apply_weight_streaming(net, "cuda")
        else:
            net.cuda()
        losses = []
        for _ in range(2):
            x, t, ctx, cond = (v.cuda() for v in _inputs(T=3, H=32, W=32))
            loss = net(x, t, ctx, cond).float().square().mean()
            loss.backward()
            losses.append(loss.detach().cpu())
        return (torch.stack(losses), {n: p.grad.cpu() for n, p in net.named_parameters() if p.requires_grad}), net

    reference, again = run(False, False)[0], run(False, False)[0]
    reproducible = torch.equal(reference[0], again[0]) and all(
        torch.equal(reference[1][n], again[1][n]) for n in reference[1])
    for offload, stream in ((True, False), (False, True), (True, True)):
        result, net = run(offload, stream)
        if reproducible:
            _assert_same(reference, result)
        else:
            torch.testing.assert_close(result[0], reference[0], rtol=1e-2, atol=1e-3)
        if stream:
            weight = net.blocks[1].self_attn.q_proj.base_layer.weight
            assert weight.device.type == "cpu" and weight.is_pinned()  # offloaded between uses, page-locked
            assert net.weight_streamer._buffer.is_pinned()
            assert net.blocks[1].self_attn.q_proj.lora_A["default"].weight.device.type == "cuda"
        if offload:
            pools = net.activation_offload._pools
            assert list(pools) == [True] and all(b.is_pinned() for f in pools[True]._free.values() for b in f)
            stats = net.activation_offload.stats
            if ckpt == "selective":  # x and the kept attention outputs (how many tensors: the kernel's)
                assert stats["offloaded"] > 2 * len(net.blocks) and stats["kept_prefetched"] > 0, stats
            else:
                assert stats["offloaded"] == 2 * len(net.blocks), stats  # one x per block per step


# --- the trainer -------------------------------------------------------------------------------------------------


def test_trainer_low_memory_run_equals_the_default_run(tmp_path):
    """A few iterations of the tiny LoRA experiment through the trainer (EMA, optimizer, checkpoints) in the low
    memory mode give the default mode's losses and adapter file, bit for bit."""
    from cosmos_predict2.training.trainer import job_dir_of, train
    from tests.data_helpers import make_dataset
    from tests.test_train_e2e import LORA, load, make_cfg

    dataset = make_dataset(tmp_path / "ds", {"a": 9, "b": 9}, 64, 64)
    runs = []
    for mode in ("default", "low"):
        cfg = make_cfg(dataset, tmp_path / mode, LORA, "trainer.max_iter=2", "checkpoint.save_iter=2",
                       "model.config.activation_checkpointing=full",
                       f"model.config.memory_mode={mode}")  # fmt: skip
        result = train(cfg)
        state = load(job_dir_of(cfg) / "checkpoints" / "model" / "iter_000000002.pt")
        runs.append((result.losses, {k: v for k, v in state.items() if k != "lora_config"}))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1].keys() == runs[1][1].keys()
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


# --- fp8 storage of the frozen weights ---------------------------------------------------------------------------


@pytest.mark.parametrize("ckpt,storage", [("full", "fp8_e5m2"), ("selective", "fp8_e4m3")])
def test_fp8_weight_storage_is_exactly_the_rounded_base_and_close_to_it(ckpt, storage):
    """fp8 storage computes exactly what the network computes with every frozen block Linear weight replaced by its
    e5m2 rounding (same bits), keeps fp8 between calls, and stays close to the unrounded network."""
    from cosmos_predict2.networks.fp8 import store_frozen_weights_fp8

    exact = _tiny_net(True, activation_checkpointing=ckpt)
    stored = _tiny_net(True, activation_checkpointing=ckpt)
    assert store_frozen_weights_fp8(stored, storage) == 16 * len(stored.blocks)  # every Linear of a block: 10 + 6 adaLN
    rounded = _tiny_net(True, activation_checkpointing=ckpt)
    with torch.no_grad():
        for (name, p), (_, q) in zip(rounded.named_parameters(), stored.named_parameters()):
            if q.dtype in (torch.float8_e5m2, torch.float8_e4m3fn):
                p.copy_(q.float() * stored.get_submodule(name.rsplit(".", 1)[0]).fp8_scale)
    _assert_same(_loss_and_grads(rounded), _loss_and_grads(stored))
    weight = stored.blocks[0].mlp.layer1.base_layer.weight
    assert weight.dtype in (torch.float8_e5m2, torch.float8_e4m3fn) and not weight.requires_grad
    with torch.no_grad():
        out_exact, out_fp8 = exact(*_inputs()), stored(*_inputs())
    relative = ((out_fp8 - out_exact).norm() / out_exact.norm()).item()
    # docs/memory.md: 7-10% (e5m2) and 4-6% (e4m3) on this random tiny network, against 0.7-0.9% for bf16
    assert 1e-3 < relative < 0.2, relative


def test_fp8_storage_composes_with_the_low_memory_mode():
    """fp8 weights streamed from host memory with offloaded activations: the fp8 default mode's bits."""
    fp8 = _model("default", storage="fp8_e5m2")
    assert fp8.net.blocks[0].mlp.layer2.base_layer.weight.dtype == torch.float8_e5m2
    low = _model("low", storage="fp8_e5m2")
    assert any(h.dtype == torch.float8_e5m2 for h in low.net.weight_streamer.host[0])
    _assert_same(_training_step(fp8), _training_step(low))
    with pytest.raises(ModelConfigError, match="base_weight_storage"):
        parse_model_config(model_config_dict(base_weight_storage="fp8_e5m2"))  # full fine-tuning
