"""Group `scheduler`: `lambdalinear` (docs/reference.md §6 defaults), `constant`; lr = base_lr * factor."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from cosmos_predict2.configs.lazy import L

# Named by path: composing a config does not import the training package.
LAMBDALINEAR = L("cosmos_predict2.training.optim.LambdaLinearScheduler")(
    warm_up_steps=[1000],
    cycle_lengths=[10_000_000_000_000],
    f_start=[1.0e-6],
    f_max=[1.0],
    f_min=[1.0],
    verbosity_interval=0,
)
CONSTANT = L("cosmos_predict2.training.optim.ConstantScheduler")()


def register_scheduler() -> None:
    cs = ConfigStore.instance()
    cs.store(group="scheduler", package="scheduler", name="lambdalinear", node=LAMBDALINEAR)
    cs.store(group="scheduler", package="scheduler", name="constant", node=CONSTANT)
