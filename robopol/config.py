"""Typed run configuration, composed with Hydra from the top-level config groups.

`robopol train task=hopper policy=fpo train.total_env_steps=100000` selects tasks/hopper.yaml and
policies/fpo.yaml (plus sim/default.yaml), applies the key=value overrides and validates the result
into `RunConfig`. A task name that is not a file but a registered Gymnasium id (`task=Ant-v5`) runs
that environment without a config file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from robopol.errors import ConfigError
from robopol.policies.networks import ACTIVATIONS
from robopol.typed_config import build, field

CONFIG_ROOT = Path(os.environ.get("ROBOPOL_CONFIG_DIR", Path(__file__).resolve().parent.parent))
GROUP_FOLDERS = {"task": "tasks", "policy": "policies", "sim": "sim"}
DEFAULT_SELECTION = {"task": "hopper", "policy": "ppo", "sim": "default"}


@dataclass
class TaskConfig:
    name: str = "hopper"
    backend: str = field("gym", choices=("gym", "envpool", "pusht", "robomimic", "tensor"),
                         doc="envpool: env_id is an EnvPool id (Gymnasium MuJoCo v5 or DeepMind Control); "
                             "tensor: a batched torch env (robopol.sim.tensor_env)")
    env_id: str = "Hopper-v5"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = field(None, gt=0)


@dataclass
class SimConfig:
    num_envs: int = field(8, ge=1)
    vectorization: str = field("sync", choices=("sync", "async"), doc="Gymnasium backends; EnvPool steps in its own threads")
    envpool_threads: int = field(0, ge=0, doc="EnvPool worker threads (task.backend=envpool); 0 lets EnvPool choose")
    normalize_obs: bool = True
    normalize_reward: bool = True
    clip_obs: float = field(10.0, gt=0)


@dataclass
class ActorConfig:
    discriminator: ClassVar[str] = "type"
    type: str = "gaussian"
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = field("tanh", choices=tuple(ACTIVATIONS))

    @staticmethod
    def variants() -> dict[str, type[ActorConfig]]:
        return {"gaussian": GaussianActorConfig, "flow": FlowActorConfig, "diffusion": DiffusionActorConfig}


@dataclass
class GaussianActorConfig(ActorConfig):
    init_log_std: float = 0.0


@dataclass
class FlowActorConfig(ActorConfig):
    type: str = "flow"
    activation: str = field("mish", choices=tuple(ACTIVATIONS))
    flow_steps: int = field(10, ge=1)
    time_dim: int = field(16, ge=2)


@dataclass
class DiffusionActorConfig(ActorConfig):
    type: str = "diffusion"
    activation: str = field("mish", choices=tuple(ACTIVATIONS))
    denoising_steps: int = field(20, ge=1)
    ddim_steps: int = field(0, ge=0, doc="0 samples with DDPM over all denoising_steps")
    ft_denoising_steps: int = field(0, ge=0, doc="0 fine-tunes every sampling step")
    ddim_eta: float = field(1.0, ge=0)
    min_sampling_std: float = field(0.1, ge=0)
    min_logprob_std: float = field(0.1, gt=0)
    time_dim: int = field(16, ge=2)

    def __post_init__(self) -> None:
        if self.ddim_steps > self.denoising_steps:
            raise ConfigError(f"policy.actor.ddim_steps: {self.ddim_steps} exceeds denoising_steps={self.denoising_steps}")
        sampling = self.ddim_steps or self.denoising_steps
        if self.ft_denoising_steps > sampling:
            raise ConfigError(f"policy.actor.ft_denoising_steps: {self.ft_denoising_steps} exceeds the {sampling} sampling steps")


@dataclass
class CriticConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = field("tanh", choices=tuple(ACTIVATIONS))


@dataclass
class AlgoConfig:
    """Base of each algorithm's hyper-parameters; the subclasses live beside their update rules."""

    discriminator: ClassVar[str] = "name"
    actor_types: ClassVar[tuple[str, ...]] = ()
    name: str = "ppo"

    @staticmethod
    def variants() -> dict[str, type[AlgoConfig]]:
        from robopol.algos import ALGO_CONFIGS

        return ALGO_CONFIGS


@dataclass
class PolicyConfig:
    name: str = "ppo"
    n_obs_steps: int = field(1, ge=1)
    horizon: int = field(1, ge=1)
    n_action_steps: int = field(1, ge=1)
    eval_noise: str = field("zero", choices=("zero", "random"),
                            doc="sampler noise when evaluating: zero (the deterministic mode, FPO++'s choice) or "
                                "seeded standard normal, i.e. the policy as it acts in rollouts; zero noise averages "
                                "the modes of a multimodal behaviour-cloned policy")
    actor: ActorConfig = field(default_factory=GaussianActorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    algo: AlgoConfig = field(default_factory=lambda: AlgoConfig.variants()["ppo"]())

    def __post_init__(self) -> None:
        if self.n_action_steps > self.horizon:
            raise ConfigError(f"policy.n_action_steps: {self.n_action_steps} exceeds policy.horizon={self.horizon}")
        check_actor_algo_pair(self.actor.type, self.algo.name)


def check_actor_algo_pair(actor_type: Any, algo_name: Any) -> None:
    """Each algorithm works on one kind of actor (DPPO on a diffusion chain, FPO on a flow...)."""
    algo = AlgoConfig.variants().get(algo_name)
    if algo is not None and algo.actor_types and actor_type not in algo.actor_types:
        raise ConfigError(f"policy.algo.name={algo_name} needs policy.actor.type in {{{', '.join(algo.actor_types)}}}; "
                          f"got {actor_type!r}")


@dataclass
class TrainConfig:
    total_env_steps: int = field(1_000_000, gt=0, doc="environment steps (not chunks) over all envs")
    rollout_steps: int = field(256, ge=1, doc="chunk steps per env between updates")
    eval_every: int = field(10, ge=0, doc="iterations between evaluations; 0 evaluates only at the end")
    eval_episodes: int = field(10, ge=1)
    checkpoint_every: int = field(10, ge=1, doc="iterations between checkpoints")
    seed: int = field(0, ge=0)
    run_dir: str = ""
    pretrained: str = field("", doc="checkpoint whose actor and normaliser fine-tuning starts from; evaluated at step 0")
    video: bool = True
    threads: int = field(1, ge=1)
    progress: bool = True


@dataclass
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_ROOT / GROUP_FOLDERS[group]).glob("*.yaml"))


def _is_gym_id(name: str) -> bool:
    import gymnasium as gym

    return name in gym.registry


def compose(overrides: list[str]) -> dict[str, Any]:
    """Hydra composition of the selected groups plus key=value overrides, as a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    selection, rest, extra = dict(DEFAULT_SELECTION), [], []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if key in selection:
            selection[key] = value
        else:
            rest.append(item)
    hydra_overrides = []
    for group, option in selection.items():
        folder = GROUP_FOLDERS[group]
        if (CONFIG_ROOT / folder / f"{option}.yaml").exists():
            hydra_overrides.append(f"+{folder}={option}")
        elif group == "task" and _is_gym_id(option):
            hydra_overrides.append(f"+{folder}=gym")
            extra += [f"task.name={option}", f"task.env_id={option}"]
        else:
            hint = " or any registered Gymnasium env id (e.g. Ant-v5)" if group == "task" else ""
            raise ConfigError(f"unknown {group} {option!r}; allowed: {', '.join(options(group))}{hint}")
    with initialize_config_dir(config_dir=str(CONFIG_ROOT), version_base=None):
        composed = hydra_compose(config_name=None, overrides=hydra_overrides)
    OmegaConf.set_struct(composed, False)  # unknown keys are reported by name when validating
    try:
        merged = OmegaConf.merge(composed, OmegaConf.from_dotlist(extra + rest))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot apply overrides {rest}: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def load_run_config(overrides: list[str]) -> RunConfig:
    raw = compose(overrides)
    policy = raw.get("policy") if isinstance(raw.get("policy"), dict) else {}
    actor, algo = policy.get("actor"), policy.get("algo")
    if isinstance(actor, dict) and isinstance(algo, dict):  # before type-specific keys are checked
        check_actor_algo_pair(actor.get("type"), algo.get("name"))
    return build(RunConfig, raw)
