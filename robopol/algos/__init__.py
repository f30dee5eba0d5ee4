"""One update rule per file; this registry maps config names to (config class, algorithm class)."""

from __future__ import annotations

from robopol.algos.base import OnPolicyAlgorithm, OnPolicyConfig
from robopol.algos.dppo import DPPO, DPPOConfig
from robopol.algos.fpo import FPO, FPOConfig
from robopol.algos.ppo import PPO, PPOConfig

ALGORITHMS: dict[str, tuple[type[OnPolicyConfig], type[OnPolicyAlgorithm]]] = {
    "ppo": (PPOConfig, PPO),
    "fpo": (FPOConfig, FPO),
    "dppo": (DPPOConfig, DPPO),
}
ALGO_CONFIGS = {name: config for name, (config, _) in ALGORITHMS.items()}
