"""The Video2World generation pipeline used by examples/video2world.py and examples/video2world_lora.py."""

from cosmos_predict2.inference.conditioning import (
    InferenceInputError,
    build_input_video,
    load_conditioning_frames,
    save_video,
)
from cosmos_predict2.inference.defaults import DEFAULT_NEGATIVE_PROMPT, RESOLUTIONS, video_size_hw
from cosmos_predict2.inference.model_loading import LoraFlags, load_base_net, load_lora_net
from cosmos_predict2.inference.pipeline import GenerationTimings, Video2WorldPipeline
from cosmos_predict2.inference.safety import SafetyModelUnavailableError, check_safety_models

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "RESOLUTIONS",
    "GenerationTimings",
    "InferenceInputError",
    "LoraFlags",
    "SafetyModelUnavailableError",
    "Video2WorldPipeline",
    "build_input_video",
    "check_safety_models",
    "load_base_net",
    "load_conditioning_frames",
    "load_lora_net",
    "save_video",
    "video_size_hw",
]
