"""Groups `dataloader_val` and `dataloader_train`.

`dataloader_val`: `mock` (no validation set: post-training runs without validation, as the guide; the
reference's AgiBot experiments name a val loader, ours keep `mock`: the val split serves inference only), or
`heldout`: a held-out `fraction` of the training folder chosen by a hash of each file stem (never trained on);
`dataloader_val.dataset_dir=DIR` (with either): a separate folder (cosmos_predict2/data/heldout.py). Validation
itself runs with `trainer.run_validation=true` (docs/guide.md "Validation").

`dataloader_train`: the training loaders the AgiBot and GR00T examples use, selectable on their own
(`dataloader_train=groot_gr1`), each an L(DataLoader) over an L(Dataset) of a folder with videos/, metas/,
t5_xxl/ (docs/guide.md):

    agibot_head_center_fisheye_color{,_720p}  datasets/agibot_head_center_fisheye_color/train, 93 frames, 704x1280
    agibot_head_center_fisheye_color_480p     the same folder, 93 frames, 432x768
    groot_gr1                                 datasets/benchmark_train/gr1, 93 frames, 432x768, 8 workers
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from cosmos_predict2.configs.base.experiment import video_dataloader
from cosmos_predict2.configs.lazy import L
from cosmos_predict2.data import Dataset

MOCK = dict(enabled=False, dataset_dir=None)  # dataloader_val.dataset_dir=DIR alone: validate on that folder
HELDOUT = dict(enabled=True, fraction=0.1, dataset_dir=None)

AGIBOT_DIR = "datasets/agibot_head_center_fisheye_color"
GR1_DIR = "datasets/benchmark_train/gr1"


def loader(dataset_dir: str, num_frames: int, video_size: tuple[int, int], num_workers: int) -> dict:
    """The reference's loader: batch 1, drop_last, pinned memory, read through the distributed sampler."""
    dataset = L(Dataset)(dataset_dir=dataset_dir, num_frames=num_frames, video_size=video_size)
    return video_dataloader(dataset, batch_size=1, num_workers=num_workers)


def agibot_loader(video_size: tuple[int, int]) -> dict:
    return loader(f"{AGIBOT_DIR}/train", 93, video_size, num_workers=4)


AGIBOT_720P = (704, 1280)
AGIBOT_480P = (432, 768)
DATALOADER_TRAIN = {
    "default": {},  # changes nothing: the loader the experiment writes (or none)
    "agibot_head_center_fisheye_color": agibot_loader(AGIBOT_720P),
    "agibot_head_center_fisheye_color_480p": agibot_loader(AGIBOT_480P),
    "agibot_head_center_fisheye_color_720p": agibot_loader(AGIBOT_720P),
    "groot_gr1": loader(GR1_DIR, 93, (432, 768), num_workers=8),
}


def register_dataloader_val() -> None:
    cs = ConfigStore.instance()
    cs.store(group="dataloader_val", package="dataloader_val", name="mock", node=MOCK)
    cs.store(group="dataloader_val", package="dataloader_val", name="heldout", node=HELDOUT)


def register_dataloader_train() -> None:
    cs = ConfigStore.instance()
    for name, node in DATALOADER_TRAIN.items():
        cs.store(group="dataloader_train", package="dataloader_train", name=name, node=node)
