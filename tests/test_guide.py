"""NVIDIA's LoRA post-training guide, item by item, with tiny stand-ins for the released weights (issue 12)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from cosmos_predict2.configs.lazy import L, instantiate


def test_section5_concat_dataset_is_positional():
    """Section 5: `L(ConcatDataset)([metropolis_dataset, robotics_dataset])` (positional, nested lazy nodes)."""
    from torch.utils.data import ConcatDataset

    node = L(ConcatDataset)([L(list)([1, 2, 3]), L(list)([4, 5])])
    assert node["_args_"][0][0] == {"_target_": "builtins.list", "_args_": [[1, 2, 3]]}
    dataset = instantiate(node)
    assert isinstance(dataset, ConcatDataset) and len(dataset) == 5 and dataset[3] == 4


def _experiment_package(tmp_path, files: dict[str, str]) -> str:
    name = f"user_experiments_{abs(hash(tuple(files))) % 10**8}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for file, text in files.items():
        (pkg / file).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(tmp_path))
    return name


STORE = """
from hydra.core.config_store import ConfigStore
cs = ConfigStore.instance()
cs.store(group="experiment", package="_global_", name="{name}", node=dict(job=dict(name="{name}")))
"""


def test_a_broken_user_experiment_file_is_named_and_the_others_load(tmp_path):
    from cosmos_predict2.configs.base.config import IMPORT_ERRORS, import_experiments

    package = _experiment_package(tmp_path, {"good.py": STORE.format(name="guide_user_good"),
                                             "broken.py": "from nowhere import nothing\n"})  # fmt: skip
    try:
        with pytest.warns(UserWarning, match=r"broken.py failed to import \(ModuleNotFoundError"):
            names = import_experiments(package)
    finally:
        sys.path.remove(str(tmp_path))
    assert names == [f"{package}.good"]
    assert any(path.endswith("broken.py") for path in IMPORT_ERRORS)


def test_two_files_defining_one_experiment_name_is_an_error_naming_both(tmp_path):
    from cosmos_predict2.configs.base.config import DuplicateExperimentError, import_experiments

    package = _experiment_package(tmp_path, {"a.py": STORE.format(name="guide_user_twice"),
                                             "b.py": STORE.format(name="guide_user_twice")})  # fmt: skip
    try:
        with pytest.raises(DuplicateExperimentError, match=r"'guide_user_twice' is defined in both .*a.py and .*b.py"):
            import_experiments(package)
    finally:
        sys.path.remove(str(tmp_path))


CONFIG = "cosmos_predict2/configs/base/config.py"


def _compose(*overrides: str):
    from cosmos_predict2.configs.compose import compose_config

    return compose_config(CONFIG, list(overrides))


@pytest.mark.parametrize(("size", "domain", "rank", "alpha", "targets", "max_iter", "lr"), [
    ("2b", "robotics", 24, 24, "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2", 3000, 2 ** (-9.5)),
    ("2b", "surveillance", 16, 16, "q_proj,k_proj,v_proj,output_proj", 2000, 2 ** (-10.5)),
    ("2b", "creative", 32, 48, "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2,norm1,norm2", 4000, 2 ** (-9)),
    ("14b", "robotics", 24, 24, "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2", 3000, 2 ** (-9.5)),
    ("14b", "surveillance", 16, 16, "q_proj,k_proj,v_proj,output_proj", 2000, 2 ** (-10.5)),
    ("14b", "creative", 32, 48, "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2,norm1,norm2", 4000, 2 ** (-9)),
])  # fmt: skip
def test_section5_domain_recipes_ship_for_2b_and_14b(size, domain, rank, alpha, targets, max_iter, lr):
    cfg = _compose(f"experiment=predict2_video2world_lora_training_{size}_{domain}")
    m = cfg.model.config
    assert (m.train_architecture, m.lora_rank, m.lora_alpha, m.lora_target_modules) == ("lora", rank, alpha, targets)
    assert m.model_size == size.upper() and cfg.trainer.max_iter == max_iter and cfg.optimizer.lr == lr
    assert list(cfg.scheduler.cycle_lengths) == [max_iter] and cfg.job.name == f"{size}_{domain}"


def test_creative_recipe_trains_the_matched_targets_on_the_2b_network(caplog):
    """norm1,norm2 match no Linear layer: reported, and the other six targets train (as the reference)."""
    from cosmos_predict2.training.model import Video2WorldModel

    cfg = _compose("experiment=predict2_video2world_lora_training_2b_creative")
    with caplog.at_level("WARNING"):
        total, trainable = Video2WorldModel(cfg.model.config).check_trainable()
    assert "['norm1', 'norm2'] match no Linear layer" in caplog.text
    assert trainable == 22_937_600 * 2  # rank 32 on the six guide targets (rank 16 gives 22,937,600)


@pytest.mark.parametrize(("preset", "rank", "lr"), [
    ("conservative_2b", 8, 2**-12), ("balanced_2b", 16, 2**-10), ("aggressive_2b", 32, 2**-9),
    ("conservative_14b", 16, 2**-12), ("balanced_14b", 32, 2**-11), ("aggressive_14b", 64, 2**-10),
])  # fmt: skip
def test_section2_1_parameter_presets_are_selectable(preset, rank, lr):
    cfg = _compose("experiment=predict2_video2world_lora_training_2b_custom_data", f"lora_preset={preset}")
    assert (cfg.model.config.lora_rank, cfg.model.config.lora_alpha, cfg.optimizer.lr) == (rank, rank, lr)


def test_custom_data_2b_saves_every_500_iterations_as_the_guide():
    assert _compose("experiment=predict2_video2world_lora_training_2b_custom_data").checkpoint.save_iter == 500


def test_scheduler_constant_works_on_the_guide_experiments():
    """The guide lists `constant`; its experiments set lambdalinear keys, which used to make it a TypeError."""
    from cosmos_predict2.training.optim import ConstantScheduler

    cfg = _compose("experiment=predict2_video2world_lora_training_2b_custom_data", "scheduler=constant")
    factor = instantiate(cfg.scheduler)
    assert isinstance(factor, ConstantScheduler) and factor(0) == factor(10_000) == 1.0


def test_lora_fields_without_lora_architecture_say_so_loudly(caplog):
    """The guide's troubleshooting item 1."""
    from cosmos_predict2.training.model import Video2WorldModel

    cfg = _compose("experiment=predict2_video2world_training_tiny_example", "model.config.lora_rank=8")
    model = Video2WorldModel(cfg.model.config)
    with caplog.at_level("WARNING"):
        model.setup("cpu")
    assert "sets lora_rank but model.config.train_architecture='full'" in caplog.text
    assert "model.config.train_architecture=lora" in caplog.text


def test_section5_max_iter_and_lr_inside_model_config_take_effect(tmp_path, caplog):
    """The guide's domain snippets put max_iter and lr in model.config: they become trainer.max_iter / optimizer.lr."""
    import textwrap

    package = _experiment_package(tmp_path, {"robot.py": textwrap.dedent("""
        from hydra.core.config_store import ConfigStore
        from cosmos_predict2.configs.base.experiment.domains import predict2_video2world_lora_training_2b_robotics as r
        from cosmos_predict2.configs.base.experiment import merge
        snippet = merge(r, dict(model=dict(config=dict(max_iter=3000, lr=2 ** (-9.5)))))
        del snippet["trainer"]["max_iter"], snippet["optimizer"]
        ConfigStore.instance().store(group="experiment", package="_global_", name="guide_snippet_robotics",
                                     node=snippet)
    """)})  # fmt: skip
    try:
        from cosmos_predict2.configs.base.config import import_experiments

        import_experiments(package)
        with caplog.at_level("WARNING"):
            cfg = _compose("experiment=guide_snippet_robotics")
    finally:
        sys.path.remove(str(tmp_path))
    assert cfg.trainer.max_iter == 3000 and cfg.optimizer.lr == 2 ** (-9.5)
    assert "max_iter" not in cfg.model.config and "lr" not in cfg.model.config
    assert "model.config.max_iter=3000 (as the guide writes it) is trainer.max_iter" in caplog.text
