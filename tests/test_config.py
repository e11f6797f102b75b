"""Config system: lazy nodes, ConfigStore groups, shipped experiments, overrides and their errors, --dryrun."""

from __future__ import annotations

import pytest
from hydra.core.config_store import ConfigStore
from torch.utils.data import DataLoader

from cosmos_predict2.configs import L, LazyDict, instantiate
from cosmos_predict2.configs.compose import ConfigError, compose_config, group_options
from cosmos_predict2.training.optim import LambdaLinearScheduler

CONFIG = "cosmos_predict2/configs/base/config.py"


def _compose(*overrides):
    return compose_config(CONFIG, list(overrides))


def test_lazy_call_is_plain_data_and_instantiates_recursively():
    node = L(LambdaLinearScheduler)(warm_up_steps=(0,), cycle_lengths=[10], f_start=[0.0], f_max=[1.0], f_min=[0.0])
    assert type(node) is dict  # OmegaConf/ConfigStore accept only exact dicts
    assert node["_target_"] == "cosmos_predict2.training.optim.LambdaLinearScheduler"
    assert node["warm_up_steps"] == [0]  # tuples become lists
    obj = instantiate({"outer": {"sched": node, "x": 1}})
    assert isinstance(obj, LazyDict) and obj.outer.x == 1
    assert isinstance(obj.outer.sched, LambdaLinearScheduler) and obj.outer.sched(5) == pytest.approx(0.5)


def test_instantiate_override_replaces_child_without_building_it():
    node = L(dict)(a=L(int)(x="not a number"), b=2)  # building `a` would raise
    assert instantiate(node, a=7) == {"a": 7, "b": 2}
    assert instantiate(L(dict)(a=1, _recursive_=False)) == {"a": 1}


def test_groups_registered():
    _compose()
    assert {"predict2_video2world_fsdp_2b", "predict2_video2world_fsdp_14b"} <= set(group_options("model"))
    assert group_options("optimizer") == ["fusedadamw"]
    assert set(group_options("scheduler")) == {"constant", "lambdalinear"}
    assert group_options("ckpt_type") == ["standard"]
    assert group_options("callbacks") == ["basic"]
    assert group_options("dataloader_val") == ["heldout", "mock"]


def test_default_config_values():
    cfg = _compose()
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.weight_decay == 0.1 and list(cfg.optimizer.betas) == [0.9, 0.99]
    assert cfg.optimizer.eps == 1e-8
    assert list(cfg.scheduler.warm_up_steps) == [1000] and list(cfg.scheduler.f_start) == [1e-6]
    assert cfg.trainer.callbacks.grad_clip.clip_norm == 1.0
    m = cfg.model.config
    assert (m.p_mean, m.p_std, m.high_sigma_ratio, m.text_dropout_rate, m.loss_scale) == (0.0, 1.0, 0.05, 0.2, 10.0)
    assert (m.min_num_conditional_frames, m.max_num_conditional_frames, m.sigma_conditional) == (1, 2, 1e-4)
    assert m.pipe_config.ema.rate == 0.1 and m.precision == "bf16" and m.activation_checkpointing == "selective"


def test_shipped_lora_experiments_follow_the_guide():
    c2 = _compose("experiment=predict2_video2world_lora_training_2b_cosmos_nemo_assets")
    m = c2.model.config
    assert (m.train_architecture, m.lora_rank, m.lora_alpha, m.model_size) == ("lora", 16, 16, "2B")
    assert m.lora_target_modules == "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"
    assert c2.optimizer.lr == 2**-10 and c2.dataloader_train.batch_size == 2
    assert c2.trainer.max_iter == 2000 and c2.checkpoint.save_iter == 400
    assert list(c2.scheduler.cycle_lengths) == [2000] and list(c2.scheduler.f_max) == [0.6]
    assert c2.trainer.callbacks.iter_speed.hit_thres == 10
    assert (c2.job.project, c2.job.group, c2.job.name) == ("posttraining", "video2world_lora", "2b_cosmos_nemo_assets")

    c14 = _compose("experiment=predict2_video2world_lora_training_14b_cosmos_nemo_assets")
    m = c14.model.config
    assert (m.lora_rank, m.lora_alpha, m.model_size) == (32, 32, "14B")
    assert c14.optimizer.lr == 2**-11 and c14.trainer.max_iter == 1500 and c14.checkpoint.save_iter == 300
    assert list(c14.scheduler.warm_up_steps) == [0] and list(c14.scheduler.cycle_lengths) == [1500]


@pytest.mark.parametrize(
    "name",
    [
        "predict2_video2world_lora_training_2b_custom_data",
        "predict2_video2world_lora_training_14b_custom_data",
        "predict2_video2world_training_2b_cosmos_nemo_assets",
        "predict2_video2world_training_14b_cosmos_nemo_assets",
        "predict2_video2world_training_2b_custom_data",
        "predict2_video2world_training_14b_custom_data",
        "predict2_video2world_lora_training_tiny_example",
        "predict2_video2world_training_tiny_example",
    ],
)
def test_every_shipped_experiment_composes(name):
    cfg = _compose(f"experiment={name}")
    expected = "lora" if "_lora_" in name else "full"
    assert cfg.model.config.train_architecture == expected
    assert cfg.dataloader_train._target_.endswith("DataLoader")


# The resolved values of every shipped experiment, as the guide and the reference files give them, so that a change
# to the shared recipes (configs/base/experiment/recipes.py) cannot move one experiment's values unnoticed.
# name: (job.group, job.name, model_size, lora rank = alpha or None for full FT, lr, weight_decay, max_iter,
#        save_iter, batch_size, dataset_dir, context_parallel_size, scheduler (warm_up, cycle, f_max, f_min))
NEMO, CUSTOM_LORA, CUSTOM = "datasets/cosmos_nemo_assets", "datasets/custom_video2world_lora_dataset", \
    "datasets/custom_video2world_dataset"  # fmt: skip
LORA_2B_SCHED, LORA_14B_SCHED = (0, 2000, 0.6, 0.0), (0, 1500, 0.6, 0.0)
FULL_2B_SCHED, FULL_14B_SCHED = (2000, 400_000, 0.6, 0.3), (2000, 40_000, 0.25, 0.1)
TINY_SCHED = (0, 1000, 1.0, 1.0)
SHIPPED = {
    "predict2_video2world_lora_training_2b_cosmos_nemo_assets":
        ("video2world_lora", "2b_cosmos_nemo_assets", "2B", 16, 2**-10, 0.1, 2000, 400, 2, NEMO, 2, LORA_2B_SCHED),
    "predict2_video2world_lora_training_14b_cosmos_nemo_assets":
        ("video2world_lora", "14b_cosmos_nemo_assets", "14B", 32, 2**-11, 0.1, 1500, 300, 2, NEMO, 8, LORA_14B_SCHED),
    "predict2_video2world_lora_training_2b_custom_data":
        ("video2world_lora", "2b_custom_data", "2B", 16, 2**-10, 0.1, 2000, 500, 2, CUSTOM_LORA, 2, LORA_2B_SCHED),
    "predict2_video2world_lora_training_14b_custom_data":
        ("video2world_lora", "14b_custom_data", "14B", 32, 2**-11, 0.1, 1500, 300, 2, CUSTOM_LORA, 4, LORA_14B_SCHED),
    "predict2_video2world_training_2b_cosmos_nemo_assets":
        ("video2world", "2b_cosmos_nemo_assets", "2B", None, 2**-14.5, 0.1, 1000, 500, 1, NEMO, 2, FULL_2B_SCHED),
    "predict2_video2world_training_14b_cosmos_nemo_assets":
        ("video2world", "14b_cosmos_nemo_assets", "14B", None, 2**-14.5, 0.2, 1000, 500, 1, NEMO, 8, FULL_14B_SCHED),
    "predict2_video2world_training_2b_custom_data":
        ("video2world", "2b_custom_data", "2B", None, 2**-14.5, 0.1, 1000, 500, 1, CUSTOM, 2, FULL_2B_SCHED),
    "predict2_video2world_training_14b_custom_data":
        ("video2world", "14b_custom_data", "14B", None, 2**-14.5, 0.2, 1000, 500, 1, CUSTOM, 8, FULL_14B_SCHED),
    "predict2_video2world_lora_training_tiny_example":
        ("video2world_lora", "tiny_example", "tiny", 8, 2**-8, 0.0, 20, 10, 2, "datasets/tiny_example", 1, TINY_SCHED),
    "predict2_video2world_training_tiny_example":
        ("video2world", "tiny_example", "tiny", None, 2**-10, 0.0, 20, 10, 2, "datasets/tiny_example", 1, TINY_SCHED),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_experiment_values_are_pinned(name):
    group, job_name, size, rank, lr, wd, max_iter, save_iter, batch, data_dir, cp, sched = SHIPPED[name]
    cfg = _compose(f"experiment={name}")
    m, data = cfg.model.config, cfg.dataloader_train
    assert (cfg.job.project, cfg.job.group, cfg.job.name) == ("posttraining", group, job_name)
    assert m.model_size == size and m.train_architecture == ("full" if rank is None else "lora")
    if rank is not None:
        assert (m.lora_rank, m.lora_alpha, m.init_lora_weights) == (rank, rank, True)
        assert m.lora_target_modules == "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (lr, wd)
    assert (cfg.trainer.max_iter, cfg.checkpoint.save_iter, data.batch_size) == (max_iter, save_iter, batch)
    assert data.dataset.dataset_dir == data_dir and data.sampler.dataset.dataset_dir == data_dir
    frames, hw = (9, [64, 64]) if size == "tiny" else (93, [704, 1280])
    assert (data.dataset.num_frames, list(data.dataset.video_size), data.drop_last) == (frames, hw, True)
    assert cfg.model_parallel.context_parallel_size == cp
    s = cfg.scheduler
    assert (*s.warm_up_steps, *s.cycle_lengths, *s.f_max, *s.f_min) == sched
    assert m.pipe_config.ema.enabled is True
    assert cfg.trainer.callbacks.iter_speed.hit_thres == (2 if size == "tiny" else 10)


def test_experiment_merge_is_deep_and_leaves_its_inputs_alone():
    from cosmos_predict2.configs.base.experiment import merge

    base = dict(job=dict(project="p", group="g"), scheduler=dict(f_max=[0.6], f_min=[0.0]), defaults=["a", "_self_"])
    out = merge(base, dict(job=dict(name="n"), scheduler=dict(f_max=[0.25])), dict(defaults=["b"]))
    assert out == dict(job=dict(project="p", group="g", name="n"), scheduler=dict(f_max=[0.25], f_min=[0.0]),
                       defaults=["b"])  # fmt: skip
    assert base == dict(job=dict(project="p", group="g"), scheduler=dict(f_max=[0.6], f_min=[0.0]),
                        defaults=["a", "_self_"])  # fmt: skip
    out["job"]["project"] = "changed"  # nested dicts are copies, so shared recipes cannot be edited through a result
    assert base["job"]["project"] == "p"


def test_overrides_apply_with_types():
    cfg = _compose("experiment=predict2_video2world_lora_training_tiny_example", "trainer.max_iter=7",
                   "model.config.lora_rank=4", "optimizer.lr=0.5", "model.config.lora_target_modules=q_proj,k_proj")
    assert cfg.trainer.max_iter == 7 and cfg.model.config.lora_rank == 4 and cfg.optimizer.lr == 0.5
    assert cfg.model.config.lora_target_modules == "q_proj,k_proj"


def test_unknown_experiment_lists_close_matches():
    with pytest.raises(ConfigError) as e:
        _compose("experiment=predict2_video2world_lora_training_2b_cosmos_nemo_asets")
    assert "predict2_video2world_lora_training_2b_cosmos_nemo_assets" in str(e.value)
    assert "closest" in str(e.value)


def test_unknown_key_lists_close_matches():
    with pytest.raises(ConfigError) as e:
        _compose("experiment=predict2_video2world_lora_training_tiny_example", "trainer.max_itr=5")
    assert "trainer.max_iter" in str(e.value) and "max_itr" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _compose("model.config.lora_rnak=4")
    assert "model.config.lora_rank" in str(e.value)


def test_malformed_override_and_missing_config_file():
    with pytest.raises(ConfigError, match="key=value"):
        _compose("trainer.max_iter")
    with pytest.raises(ConfigError, match="no such file"):
        compose_config("cosmos_predict2/configs/base/nope.py", [])


def test_guide_style_registration_loop(tmp_path):
    """A user experiment registered with the guide's own `cs.store` loop and L(DataLoader)(...) nodes composes."""
    my_lora_experiment = dict(
        defaults=[{"override /model": "predict2_video2world_fsdp_2b"}, {"override /optimizer": "fusedadamw"},
                  {"override /scheduler": "lambdalinear"}, {"override /ckpt_type": "standard"},
                  {"override /dataloader_val": "mock"}, "_self_"],  # fmt: skip
        job=dict(project="posttraining", group="video2world_lora", name="mine"),
        model=dict(config=dict(train_architecture="lora", lora_rank=8, lora_alpha=8)),
        dataloader_train=L(DataLoader)(dataset=L(dict)(dataset_dir="x"), batch_size=1),
        optimizer=dict(lr=2 ** (-12)),
    )
    for _item in [my_lora_experiment]:
        experiment_name = [name.lower() for name, value in locals().items() if value is _item][0]
        ConfigStore.instance().store(group="experiment", package="_global_", name=experiment_name, node=_item)
    cfg = _compose("experiment=my_lora_experiment")
    assert cfg.model.config.lora_rank == 8 and cfg.optimizer.lr == 2**-12


def test_dryrun_prints_resolved_config(capsys):
    from scripts.train import main

    assert main(["--config", CONFIG, "--dryrun", "--", "experiment=predict2_video2world_lora_training_tiny_example",
                 "trainer.max_iter=3"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "max_iter: 3" in out and "train_architecture: lora" in out
    assert main(["--config", CONFIG, "--dryrun", "--", "experiment=nope"]) == 2
    assert "closest" in capsys.readouterr().err
