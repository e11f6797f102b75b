"""The Video2World DiT, its named sizes and weight IO."""

from cosmos_predict2.networks.attention import (
    attention_backend_for,
    get_attention_backend,
    resolved_attention_backend,
    set_attention_backend,
)
from cosmos_predict2.networks.configs import EXPECTED_PARAMETERS, NET_CONFIGS, build_net, count_parameters, net_config
from cosmos_predict2.networks.dit import MinimalV1LVGDiT, MiniTrainDIT
from cosmos_predict2.networks.weights import (
    CheckpointMismatchError,
    load_dit_weights,
    load_reference_weights,
    save_diffusers,
)

__all__ = [
    "EXPECTED_PARAMETERS",
    "NET_CONFIGS",
    "CheckpointMismatchError",
    "MiniTrainDIT",
    "MinimalV1LVGDiT",
    "attention_backend_for",
    "build_net",
    "count_parameters",
    "get_attention_backend",
    "load_dit_weights",
    "load_reference_weights",
    "net_config",
    "resolved_attention_backend",
    "save_diffusers",
    "set_attention_backend",
]
