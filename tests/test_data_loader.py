"""build_train_loader: the configured sampler with the data-parallel rank/size, DataLoader keys honoured or warned
about once each, resumable batches, and the tokenizer check of cached latents."""

import logging

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from cosmos_predict2.configs.lazy import L
from cosmos_predict2.training.data import build_train_loader

DATASET = {"_target_": "data_helpers.IndexDataset", "n": 8}


def loader_cfg(**kwargs):
    return L(DataLoader)(dataset=DATASET, **kwargs)


def indices(loader, n_batches: int) -> list[list[int]]:
    it = iter(loader)
    return [next(it)["index"].tolist() for _ in range(n_batches)]


def test_configured_sampler_gets_the_data_parallel_rank_and_size():
    cfg = loader_cfg(sampler=L(DistributedSampler)(dataset=DATASET, shuffle=False), batch_size=2)
    loader, dataset = build_train_loader(cfg, seed=0, start_batch=0, dp_rank=1, dp_size=3)
    sampler = loader.batch_sampler.sampler
    assert isinstance(sampler, DistributedSampler) and not sampler.shuffle  # the user's sampler and settings
    assert (sampler.num_replicas, sampler.rank) == (3, 1) and sampler.dataset is dataset
    assert loader.batch_sampler.rank == 1
    # 8 samples over 3 ranks, unshuffled: rank 1 reads 1, 4, 7 per epoch (epochs laid end to end).
    assert indices(loader, 3) == [[1, 4], [7, 1], [4, 7]]


def test_default_sampler_shards_over_data_parallel_ranks():
    per_rank = []
    for rank in range(2):
        loader, _ = build_train_loader(loader_cfg(batch_size=4), seed=0, start_batch=0, dp_rank=rank, dp_size=2)
        per_rank.append(sum(indices(loader, 1), []))
    assert sorted(per_rank[0] + per_rank[1]) == list(range(8))  # one epoch, disjoint halves


def test_sampler_without_rank_parameters():
    cfg = loader_cfg(sampler=L(SequentialSampler)(data_source=DATASET), batch_size=3)
    loader, dataset = build_train_loader(cfg, seed=0, start_batch=0)
    sampler = loader.batch_sampler.sampler
    assert isinstance(sampler, SequentialSampler) and sampler.data_source is dataset
    assert indices(loader, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 0]]
    with pytest.raises(ValueError, match="all 2 data-parallel ranks would read the same samples"):
        build_train_loader(cfg, seed=0, start_batch=0, dp_rank=0, dp_size=2)


def test_sampler_rank_contradicting_the_layout_is_refused():
    cfg = loader_cfg(sampler=L(DistributedSampler)(dataset=DATASET, num_replicas=4, rank=0))
    with pytest.raises(ValueError, match="num_replicas=4 contradicts"):
        build_train_loader(cfg, seed=0, start_batch=0, dp_rank=0, dp_size=2)


def test_resume_continues_with_batch_n_and_ranks_draw_different_seeds():
    cfg = loader_cfg(batch_size=3)

    def stream(start, rank=0):
        loader, _ = build_train_loader(cfg, seed=5, start_batch=start, dp_rank=rank, dp_size=2)
        it = iter(loader)
        return [next(it) for _ in range(6 - start)]

    full, resumed = stream(0), stream(4)
    for a, b in zip(full[4:], resumed):
        assert a["index"].tolist() == b["index"].tolist() and torch.equal(a["noise"], b["noise"])
    assert not torch.equal(full[0]["noise"], stream(0, rank=1)[0]["noise"])


def test_each_unused_key_warns_once(caplog):
    cfg = loader_cfg(batch_size=2, shuffle=True, drop_last=True, in_order=False, num_workers=0, prefetch_factor=4,
                     persistent_workers=True, generator=L(torch.Generator)())  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="cosmos_predict2.training.data"):
        loader, _ = build_train_loader(cfg, seed=0, start_batch=0)
    messages = [r.getMessage() for r in caplog.records]
    for key in ("shuffle", "drop_last", "in_order", "prefetch_factor", "persistent_workers", "generator"):
        assert len([m for m in messages if m.startswith(f"dataloader_train.{key}=")]) == 1, (key, messages)
    assert len(messages) == 6 and "has no effect" in messages[0]
    assert indices(loader, 1) and loader.in_order  # the stream still works, in order


def test_honoured_keys_reach_the_loader_without_warnings(caplog):
    cfg = loader_cfg(batch_size=2, num_workers=1, prefetch_factor=3, persistent_workers=True, timeout=30,
                     collate_fn=L("data_helpers.tagging_collate")(), drop_last=False)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="cosmos_predict2.training.data"):
        loader, _ = build_train_loader(cfg, seed=0, start_batch=0)
    assert not caplog.records  # drop_last=False is DataLoader's default: nothing to warn about
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers, loader.timeout) == (1, 3, True, 30)
    batch = next(iter(loader))
    assert batch["collated_by"] == "tagging_collate" and batch["index"].shape == (2,)


def test_unknown_and_unsupported_keys_raise():
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        build_train_loader(loader_cfg(bogus=1), seed=0, start_batch=0)
    with pytest.raises(ValueError, match="batch_sampler cannot be used"):
        build_train_loader(loader_cfg(batch_sampler=L(SequentialSampler)(data_source=DATASET)), seed=0, start_batch=0)


def test_configured_loader_class_is_built():
    from data_helpers import TaggedLoader

    loader, _ = build_train_loader({"_target_": "data_helpers.TaggedLoader", "dataset": DATASET}, seed=0, start_batch=0)
    assert type(loader) is TaggedLoader and loader.batch_sampler.batch_size == 1
    with pytest.raises(ImportError, match="no_such_loader"):
        build_train_loader({"_target_": "torch.utils.data.no_such_loader", "dataset": DATASET}, seed=0, start_batch=0)
