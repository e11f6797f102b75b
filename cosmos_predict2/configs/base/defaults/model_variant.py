"""The released Video2World checkpoints (2B/14B x 480p/720p x 10/16 fps) as training choices.

Group `model_variant`, applied after the experiment (like `lora_preset`):

    experiment=predict2_video2world_lora_training_2b_custom_data model_variant=2b_480p_10fps

sets `model.config.dit_path` to `checkpoints/nvidia/Cosmos-Predict2-2B-Video2World/model-480p-10fps.pt` and the
training clips to what that checkpoint was trained on: `dataloader_train.dataset.num_frames` (93 at 16 fps, 61 at
10 fps) and `video_size` (480p: [432, 768], 720p: [704, 1280], 16:9). A variant does not change the network
size: the experiment (its model group, rank, lr, context parallelism) decides it, and a variant of the other size
stops composition with a message naming the matching variant and experiments (a 14B variant on a 2B experiment
would train the 2B recipe's values on the 14B network).

Group `model` also gets the reference's per-variant model entries, `predict2_video2world_fsdp_{2b,14b}_{480,720}p_
{10,16}fps` (the base model entry with that checkpoint; the 14B ones with the reference's fsdp_shard_size 8), which
the AgiBot experiments select. They set the model only, not the data.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from cosmos_predict2.configs.base.defaults.model import PREDICT2_VIDEO2WORLD_FSDP_2B, PREDICT2_VIDEO2WORLD_FSDP_14B

# The values of cosmos_predict2/inference/defaults.py (not imported: that package loads the inference stack, and
# composing a config stays light; tests/test_guide_variants.py checks they agree).
FRAMES_PER_FPS = {16: 93, 10: 61}
VIDEO_SIZE_16_9 = {"480": (432, 768), "720": (704, 1280)}  # (H, W)
SIZES = ("2B", "14B")
RESOLUTIONS = ("480", "720")
FPS = (10, 16)
RESOLVER = "cosmos_predict2_variant_dit_path"


def variant_name(size: str, resolution: str, fps: int) -> str:
    return f"{size.lower()}_{resolution}p_{fps}fps"


VARIANTS = {variant_name(s, r, f): (s, r, f) for s in SIZES for r in RESOLUTIONS for f in FPS}


def _dit_path(size: str, resolution: str, fps: str, experiment_size: str) -> str:
    """The variant's checkpoint, when the experiment trains a network of the variant's size."""
    if str(experiment_size) != size:
        name = variant_name(size, resolution, int(fps))
        same = variant_name(str(experiment_size), resolution, int(fps))
        hint = (f"use model_variant={same}" if str(experiment_size) in SIZES
                else f"model size {experiment_size!r} has no released checkpoint")  # fmt: skip
        raise ValueError(
            f"model_variant={name} is a {size} checkpoint but the experiment trains model.config.model_size="
            f"{experiment_size}: {hint}, or pick a {size} experiment (e.g. "
            f"predict2_video2world_lora_training_{size.lower()}_custom_data)"
        )
    return default_dit_path(size, resolution, int(fps))


def default_dit_path(size: str, resolution: str, fps: int) -> str:
    return f"checkpoints/nvidia/Cosmos-Predict2-{size}-Video2World/model-{resolution}p-{fps}fps.pt"


def variant(size: str, resolution: str, fps: int) -> dict:
    """The overrides of one variant (package _global_). `dit_path` is resolved at composition against the
    experiment's `model.config.model_size`, which is how a variant of the other size is refused."""
    h, w = VIDEO_SIZE_16_9[resolution]
    return dict(
        model=dict(config=dict(dit_path=f"${{{RESOLVER}:{size},{resolution},{fps},${{model.config.model_size}}}}")),
        dataloader_train=dict(dataset=dict(num_frames=FRAMES_PER_FPS[fps], video_size=[h, w])),
    )


def model_entry(size: str, resolution: str, fps: int) -> dict:
    """The reference's `predict2_video2world_fsdp_<size>_<res>p_<fps>fps` model entry."""
    base = PREDICT2_VIDEO2WORLD_FSDP_2B if size == "2B" else PREDICT2_VIDEO2WORLD_FSDP_14B
    config = dict(base["model"]["config"], dit_path=default_dit_path(size, resolution, fps), fsdp_shard_size=8)
    return dict(base, model=dict(base["model"], config=config))


def register_model_variants() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _dit_path)
    cs = ConfigStore.instance()
    for name, (size, resolution, fps) in VARIANTS.items():
        cs.store(group="model_variant", package="_global_", name=name, node=variant(size, resolution, fps))
        cs.store(group="model", package="_global_", name=f"predict2_video2world_fsdp_{name}",
                 node=model_entry(size, resolution, fps))  # fmt: skip
