"""Typed run configuration, composed with Hydra from the top-level config groups.

`robopol train task=hopper policy=fpo train.total_env_steps=100000` selects tasks/hopper.yaml and
policies/fpo.yaml (plus sim/default.yaml), applies the key=value overrides and validates the result
into `RunConfig`. The group files are looked up on robopol's search path (robopol/config_search.py: a
user's folders first, then the shipped ones). A task name that is not a file but a registered Gymnasium
id (`task=Ant-v5`) runs that environment without a config file."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from robopol import config_search, registry
from robopol.errors import ConfigError
from robopol.policies.networks import ACTIVATIONS
from robopol.typed_config import build, field

if TYPE_CHECKING:
    from robopol.policies.base import Actor, ChunkSpec

# Composition order: a later group overrides an earlier one, so a policy file may set sim.* and train.*
# settings (e.g. SAC's single env) over sim/default.yaml and the task's budget.
DEFAULT_SELECTION = {"sim": "default", "task": "hopper", "policy": "ppo"}


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
    cpu: int = field(-1, ge=-1, doc="pin the learner thread and EnvPool's workers to this core (the next ones for "
                                    "more workers; + LOCAL_RANK under torchrun); -1: no pinning "
                                    "(robopol.core_pinning says why one core is faster)")
    normalize_obs: bool = field(True, doc="running mean/std of observations, saved in the checkpoint; false: no "
                                          "statistics (a pretrained run's stay as loaded) and no clip, as SB3 "
                                          "without VecNormalize")
    normalize_reward: bool = True
    clip_obs: float = field(10.0, gt=0, doc="bound of normalised observations (with normalize_obs only, as VecNormalize's)")

    def obs_clip(self) -> float | None:
        """The normaliser's clip: none on raw observations, whose scale (HalfCheetah's joint velocities reach
        25) is the env's, not a unit one."""
        return self.clip_obs if self.normalize_obs else None


@dataclass
class ActorConfig:
    """Base of each actor's settings; the subclasses live beside their actors (robopol/policies/) and
    register under their `type` when defined."""

    discriminator: ClassVar[str] = "type"
    type: str = "gaussian"
    hidden: list[int] = field(gt=0, default_factory=lambda: [64, 64])
    activation: str = field("tanh", choices=tuple(ACTIVATIONS))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            registry.register("actor config", cls.__dict__["type"], cls)

    @staticmethod
    def variants() -> dict[str, type[ActorConfig]]:
        return registry.lookup("actor config")

    def build(self, spec: ChunkSpec) -> Actor:
        """The actor these settings describe, for a task's chunk spec."""
        raise NotImplementedError(f"actor type {self.type!r} has no build()")


@dataclass
class CriticConfig:
    hidden: list[int] = field(gt=0, default_factory=lambda: [64, 64])
    activation: str = field("tanh", choices=tuple(ACTIVATIONS))


@dataclass
class AlgoConfig:
    """Base of each algorithm's hyper-parameters; the subclasses live beside their update rules."""

    discriminator: ClassVar[str] = "name"
    actor_types: ClassVar[tuple[str, ...]] = ()
    name: str = "ppo"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            registry.register("algo config", cls.__dict__["name"], cls)

    @staticmethod
    def variants() -> dict[str, type[AlgoConfig]]:
        return registry.lookup("algo config")


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
    actor: ActorConfig = field(default_factory=lambda: ActorConfig.variants()["gaussian"]())
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
    rollout_steps: int = field(256, ge=1, doc="chunk steps per env per iteration: on-policy, between updates; "
                                              "off-policy, one block of collection and updates (a train.csv row)")
    eval_every: int = field(10, ge=0, doc="iterations between evaluations; 0 evaluates only at the end")
    eval_episodes: int = field(10, ge=1)
    checkpoint_every: int = field(10, ge=1, doc="iterations between checkpoints")
    seed: int = field(0, ge=0)
    run_dir: str = ""
    pretrained: str = field("", doc="checkpoint whose actor and normaliser fine-tuning starts from; evaluated at step 0")
    video: bool = True
    threads: int = field(1, ge=1)
    autocast: str = field("none", choices=("none", "bf16"),
                          doc="bf16: updates run their matrix products in bfloat16 (torch.autocast), about 2x "
                              "faster on CPUs with AVX512-BF16 or AMX; weights, optimiser state and acting stay fp32")
    progress: bool = True
    device: str = field("cpu", doc="where networks, optimisers and updates run: auto (cuda when a GPU is visible), "
                                   "cpu, cuda or cuda:N; envs always step on the CPU")
    dist_timeout_s: float = field(600.0, gt=0, doc="multi-process runs (torchrun): how long a rank waits on another "
                                                    "before stopping with an error; must exceed an evaluation's length")

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ConfigError(f"train.device: {self.device!r} is not allowed; choose auto, cpu, cuda or cuda:N "
                              "(N a GPU index)")


@dataclass
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.task.backend == "tensor":  # robopol.loops.env_batch.TensorBatch steps single actions
            for key in ("n_obs_steps", "n_action_steps"):
                if getattr(self.policy, key) != 1:
                    raise ConfigError(f"policy.{key}: {getattr(self.policy, key)}; tensor tasks (task.backend=tensor) "
                                      "observe and act one step at a time: allowed 1")
        if self.sim.cpu >= 0 and self.train.threads != 1:  # torch's threads would inherit the one core
            raise ConfigError(f"train.threads: {self.train.threads} with sim.cpu: {self.sim.cpu}; a run pinned to one "
                              "core trains on one thread: allowed 1, or sim.cpu=-1")


def _is_gym_id(name: str) -> bool:
    import gymnasium as gym

    return name in gym.registry


def _check_global_package(group: str, option: str, path: Path) -> None:
    """Hydra nests a group file under its folder name (`tasks:`) unless its header, the leading run of
    `# @key value` lines, says `# @package _global_`; robopol's files hold top-level keys (task:, train:)."""
    lines = (line.strip() for line in path.read_text().splitlines() if line.strip())
    header = itertools.takewhile(lambda line: re.match(r"#\s*@", line), lines)
    if not any(line.lstrip("#").split() == ["@package", "_global_"] for line in header):
        raise ConfigError(f"{group}={option}: {path} must begin with the line '# @package _global_' "
                          "(before any other comment), as robopol's own files do")


def _hydra_searchpath(roots: list[Path]) -> str:
    """hydra.searchpath=[...]: Hydra looks in the primary folder, then in these, and takes the first match."""
    quoted = ("'file://" + str(root).replace("'", "\\'") + "'" for root in roots)
    return f"hydra.searchpath=[{','.join(quoted)}]"


def compose(overrides: list[str]) -> dict[str, Any]:
    """Hydra composition of the selected groups plus key=value overrides, as a plain dict."""
    import yaml
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
    primary, *more_roots = config_search.search_roots()
    hydra_overrides = [_hydra_searchpath(more_roots)]
    for group, option in selection.items():
        folder, path = config_search.GROUP_FOLDERS[group], config_search.find(group, option)
        if path is not None:
            _check_global_package(group, option, path)
            hydra_overrides.append(f"+{folder}={option}")
        elif group == "task" and _is_gym_id(option):
            hydra_overrides.append(f"+{folder}=gym")
            extra += [f"task.name={option}", f"task.env_id={option}"]
        else:
            hint = " or any registered Gymnasium env id (e.g. Ant-v5)" if group == "task" else ""
            raise ConfigError(f"unknown {group} {option!r}; allowed: {config_search.allowed(group)}{hint}")
    with initialize_config_dir(config_dir=str(primary), version_base=None):
        composed = hydra_compose(config_name=None, overrides=hydra_overrides)
    OmegaConf.set_struct(composed, False)  # unknown keys are reported by name when validating
    merged = composed
    for item in extra + rest:  # one at a time, so an error names its override
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot apply override {item!r}: {_one_line(exc)}") from None
    try:
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{getattr(exc, 'full_key', None) or 'config'}: cannot resolve its value ({_one_line(exc)})") from None


def _one_line(exc: Exception) -> str:
    """The gist of an OmegaConf or YAML error, whose messages span several lines."""
    if getattr(exc, "problem", None):  # yaml's MarkedYAMLError
        return f"not valid YAML ({exc.problem})"  # type: ignore[attr-defined]
    return str(getattr(exc, "msg", None) or exc).splitlines()[0]


def load_run_config(overrides: list[str]) -> RunConfig:
    raw = compose(overrides)
    policy = raw.get("policy") if isinstance(raw.get("policy"), dict) else {}
    actor, algo = policy.get("actor"), policy.get("algo")
    if isinstance(actor, dict) and isinstance(algo, dict):  # before type-specific keys are checked
        check_actor_algo_pair(actor.get("type"), algo.get("name"))
    return build(RunConfig, raw)
