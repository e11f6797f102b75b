"""Group `optimizer`: `fusedadamw` (AdamW, fused on CUDA, fp32 master weights; docs/reference.md §6)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from cosmos_predict2.configs.lazy import L

# Named by path: composing a config does not import the training package.
FUSEDADAMW = L("cosmos_predict2.training.optim.build_optimizer")(
    lr=1e-4, weight_decay=0.1, betas=[0.9, 0.99], eps=1e-8, fused=None
)


def register_optimizer() -> None:
    ConfigStore.instance().store(group="optimizer", package="optimizer", name="fusedadamw", node=FUSEDADAMW)
