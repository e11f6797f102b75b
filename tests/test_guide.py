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
