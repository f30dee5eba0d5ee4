"""One update rule per file. ALGORITHMS maps the RL trainer's algorithms to (config class, algorithm
class); ALGO_CONFIGS names every algorithm config, including behaviour cloning, which `robopol
pretrain` runs instead of the RL trainer."""

from __future__ import annotations

from robopol.algos.base import OnPolicyAlgorithm, OnPolicyConfig
from robopol.algos.bc import BCConfig
from robopol.algos.dppo import DPPO, DPPOConfig
from robopol.algos.fpo import FPO, FPOConfig
from robopol.algos.ppo import PPO, PPOConfig
from robopol.config import AlgoConfig
from robopol.errors import ConfigError

PRETRAIN_ONLY = {"bc": BCConfig}


class _RLRegistry(dict):
    """A lookup of an algorithm the RL trainer cannot run fails with what to do instead."""

    def __missing__(self, name: str):
        if name in PRETRAIN_ONLY:
            raise ConfigError(f"policy.algo.name={name} is trained offline: run `robopol pretrain task=... "
                              f"policy=bc_diffusion policy.algo.dataset=...`, then fine-tune with train.pretrained=<run>")
        raise ConfigError(f"policy.algo.name: {name!r} is not an RL algorithm; choose one of: {', '.join(self)}")


ALGORITHMS: dict[str, tuple[type[OnPolicyConfig], type[OnPolicyAlgorithm]]] = _RLRegistry({
    "ppo": (PPOConfig, PPO),
    "fpo": (FPOConfig, FPO),
    "dppo": (DPPOConfig, DPPO),
})
ALGO_CONFIGS: dict[str, type[AlgoConfig]] = {**{name: config for name, (config, _) in ALGORITHMS.items()}, **PRETRAIN_ONLY}
