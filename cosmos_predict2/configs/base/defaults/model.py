"""Group `model`: the Video2World model at each size (package _global_, as in the reference: a model entry may
also set trainer/model_parallel values). The target is named by its path, so composing a config imports neither
the training model nor the network."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from cosmos_predict2.configs.lazy import L
from cosmos_predict2.configs.model_config import DEFAULT_DIT_PATHS, model_config_dict

VIDEO2WORLD_MODEL = "cosmos_predict2.training.model.Video2WorldModel"


def _model(**config) -> dict:
    return dict(
        trainer=dict(distributed_parallelism="fsdp"),
        model=L(VIDEO2WORLD_MODEL)(config=model_config_dict(**config)),
    )


PREDICT2_VIDEO2WORLD_FSDP_2B = _model(model_size="2B", dit_path=DEFAULT_DIT_PATHS["2B"], fsdp_shard_size=8)
PREDICT2_VIDEO2WORLD_FSDP_14B = _model(
    model_size="14B",
    dit_path=DEFAULT_DIT_PATHS["14B"],
    tokenizer_path="checkpoints/nvidia/Cosmos-Predict2-14B-Video2World/tokenizer/tokenizer.pth",
    fsdp_shard_size=32,
)
# The tiny network of cosmos_predict2.networks, random weights, small random VAE: trains on a CPU in seconds.
PREDICT2_VIDEO2WORLD_TINY = _model(
    model_size="tiny",
    dit_path="",
    tokenizer_type="tiny_random",
    tokenizer_path="",
    precision="fp32",
    activation_checkpointing="none",
)


def register_model() -> None:
    cs = ConfigStore.instance()
    cs.store(group="model", package="_global_", name="predict2_video2world_fsdp_2b", node=PREDICT2_VIDEO2WORLD_FSDP_2B)
    cs.store(group="model", package="_global_", name="predict2_video2world_fsdp_14b",
             node=PREDICT2_VIDEO2WORLD_FSDP_14B)  # fmt: skip
    cs.store(group="model", package="_global_", name="predict2_video2world_tiny", node=PREDICT2_VIDEO2WORLD_TINY)
