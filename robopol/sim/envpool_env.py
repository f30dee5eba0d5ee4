"""EnvPool backend: Gymnasium MuJoCo ids (Hopper-v5, ...) and DeepMind Control tasks (CheetahRun-v1,
...) stepped by EnvPool's C++ thread pool, behind the same contract as the Gymnasium backend.

`EnvPoolEnv` is one env (evaluation, env checks, spaces); `EnvPoolVectorEnv` is the training vector:
all envs in one pool, robopol's observation history and action chunking done batched, and Gymnasium's
SAME_STEP autoreset (a finished env's last observation in info["final_obs"], its chunk's info in
info["final_info"]). EnvPool itself resets on the step after an episode ends (NEXT_STEP); the vector
resets finished envs at once instead, so both backends hand the learner the same transitions.

Differences from Gymnasium on the same id (tests/test_envpool.py checks each):
- EnvPool runs its own MuJoCo build and random streams: a seed reproduces an EnvPool episode, not
  Gymnasium's episode for that seed; statistics over episodes agree, single trajectories do not.
- An episode that ends unhealthy on its last allowed step is reported truncated only (Gymnasium's
  TimeLimit reports both flags).
- No rendering: EnvPool's renderer aborts the process when it finds no GL context (headless osmesa).
- info carries only what robopol reads (chunk_steps, is_success); EnvPool's own keys are dropped.
DeepMind Control observations (a dict per task) are concatenated in sorted key order; DMC episodes
never terminate, they are truncated at max_episode_steps (1000 decisions). EnvPool's DMC `frame_skip`
is physics steps per decision, by default DMC's own (cheetah 1, hopper and finger 4, walker 10): that
is action repeat 1; action repeat k is frame_skip k times that, with max_episode_steps 1000 / k.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from robopol.errors import ConfigError

# EnvPool config keys robopol sets itself; the rest of an id's config may come from task.env_kwargs.
POOL_KEYS = frozenset({"num_envs", "batch_size", "num_threads", "max_num_players", "thread_affinity_offset",
                       "base_path", "seed", "env_seed", "gym_reset_return_info"})


@cache
def _registered_ids() -> frozenset[str]:
    import envpool

    return frozenset(envpool.list_all_envs())


def check_task(env_id: str, config: dict[str, Any]) -> None:
    """ConfigError unless EnvPool has `env_id` and every key of `config` is one of its options."""
    if env_id not in _registered_ids():
        raise ConfigError(f"task.env_id: EnvPool has no env {env_id!r}; e.g. Hopper-v5, HalfCheetah-v5, "
                          "CheetahRun-v1, WalkerWalk-v1 (envpool.list_all_envs() lists all)")
    import envpool

    allowed = sorted(set(envpool.make_spec(env_id).config._fields) - POOL_KEYS)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"task.env_kwargs: {unknown[0]!r} is not an EnvPool option of {env_id}; "
                          f"allowed: {', '.join(allowed)}")


def make_pool(env_id: str, config: dict[str, Any], seeds: Sequence[int], threads: int = 0,
              core: int | None = None) -> Any:
    """An EnvPool of len(seeds) envs, env i seeded with seeds[i] (EnvPool's env_seed); its worker threads
    pinned to `core` onwards, or unpinned for None."""
    import envpool

    check_task(env_id, config)
    pool = envpool.make_gymnasium(env_id, num_envs=len(seeds), env_seed=[int(s) for s in seeds],
                                  num_threads=threads, thread_affinity_offset=-1 if core is None else core, **config)
    # EnvPool 1.2.5 cannot build the space of an unbounded scalar observation under numpy 1.x (walker's
    # `height`: int(1.8e308) reaches np.isclose) and fails on the first reset; the pool caches its space
    # in this attribute, so robopol gives it one built from the same specs first.
    pool._gym_observation_space = observation_space(pool.spec.state_array_spec)
    return pool


def observation_space(state_specs: dict[str, Any]) -> gym.Space:
    """A pool's observation space from its specs: one Box, or (DMC) a Dict of unbounded Boxes; DMC's
    declared bounds are placeholders (the smallest and largest double) and its observations unbounded."""
    parts = {key: spec for key, spec in state_specs.items() if key == "obs" or key.startswith("obs:")}
    shape = {key: tuple(s for s in spec.shape if s != -1) for key, spec in parts.items()}
    if list(parts) == ["obs"]:
        spec = parts["obs"]
        return gym.spaces.Box(spec.minimum, spec.maximum, shape["obs"], dtype=np.float64)
    return gym.spaces.Dict({key.removeprefix("obs:"): gym.spaces.Box(-np.inf, np.inf, shape[key], np.float64)
                            for key in parts})


def flat_box(space: gym.Space) -> gym.spaces.Box:
    """A pool's observation space as one flat Box (a Dict's parts concatenated in key order)."""
    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Box(-np.inf, np.inf, (sum(int(np.prod(p.shape)) for p in space.values()),), np.float64)
    return gym.spaces.Box(space.low.reshape(-1), space.high.reshape(-1), dtype=np.float64)


def flatten(obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    """A batch of pool observations -> (num_envs, obs_dim) float64, a fresh array; a dict's parts in
    sorted key order, the order of the Dict space."""
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(obs[k], np.float64).reshape(len(obs[k]), -1) for k in sorted(obs)], axis=1)
    return np.array(obs, dtype=np.float64).reshape(len(obs), -1)


def action_box(space: gym.Space) -> gym.spaces.Box:
    """EnvPool declares float64 actions; Gymnasium's MuJoCo envs (and robopol's policies) use float32."""
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"task.env_id: robopol needs Box actions; this EnvPool env has {type(space).__name__}")
    return gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)


class EnvPoolEnv(gym.Env):
    """One EnvPool env behind the Gymnasium Env API. A seeded reset rebuilds the one-env pool with that
    seed (EnvPool fixes seeds at construction; a rebuild takes milliseconds)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_id: str, config: dict[str, Any] | None = None, render_mode: str | None = None) -> None:
        if render_mode is not None:
            raise ConfigError(f"render_mode: EnvPool tasks do not render here; got {render_mode!r}")
        self.env_id, self.config, self.render_mode = env_id, dict(config or {}), None
        self.pool, self.seeded = make_pool(env_id, self.config, [0]), False
        self.observation_space = flat_box(self.pool.observation_space)
        self.action_space = action_box(self.pool.action_space)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None or not self.seeded:  # the first unseeded reset draws a seed, as Gymnasium's envs do
            self.pool.close()
            self.pool = make_pool(self.env_id, self.config, [seed if seed is not None else int(self.np_random.integers(2**31 - 1))])
            self.seeded = True
        obs, _ = self.pool.reset()
        return flatten(obs)[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, _ = self.pool.step(np.asarray(action, np.float64).reshape(1, -1))
        return flatten(obs)[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def close(self) -> None:
        self.pool.close()


gym.register("robopol/EnvPool-v0", entry_point=EnvPoolEnv)


class ChunkStep(NamedTuple):
    """One vector step of EnvPoolVectorEnv as fresh arrays: obs (num_envs, n_obs_steps, obs_dim) float32,
    where an episode ended the first history of the next one; final_obs the last history of every env's
    chunk (equal to obs where nothing ended); reward float64 summed over the chunk; terminated /
    truncated bool; steps the env steps each env ran (a chunk stops where its episode ends)."""

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    steps: np.ndarray


class EnvPoolVectorEnv(VectorEnv):
    """`num_envs` EnvPool envs with observation history (n_obs_steps) and action chunks (n_action_steps),
    observations float32 (num_envs, n_obs_steps, obs_dim), actions (num_envs, n_action_steps, act_dim).

    A chunk stops early for an env whose episode ends, as robopol's ActionChunk wrapper does: only the
    envs still running are stepped. `reset(seed=s)` seeds env i with s + i (a list gives each its own
    seed), as Gymnasium's vector envs do; `threads` is EnvPool's worker count (0: EnvPool chooses), pinned
    to `core` onwards when given (robopol.core_pinning)."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_id: str, config: dict[str, Any], num_envs: int, n_obs_steps: int = 1,
                 n_action_steps: int = 1, threads: int = 0, core: int | None = None) -> None:
        self.env_id, self.config, self.threads, self.core = env_id, dict(config), threads, core
        self.num_envs, self.n_action_steps = num_envs, n_action_steps
        seeds = np.random.default_rng().integers(0, 2**31 - 1, num_envs)
        self.pool = make_pool(env_id, self.config, seeds, threads, core)
        obs, act = flat_box(self.pool.observation_space), action_box(self.pool.action_space)
        self.single_observation_space = gym.spaces.Box(np.repeat(obs.low[None], n_obs_steps, 0).astype(np.float32),
                                                       np.repeat(obs.high[None], n_obs_steps, 0).astype(np.float32),
                                                       dtype=np.float32)
        self.single_action_space = gym.spaces.Box(np.repeat(act.low[None], n_action_steps, 0),
                                                  np.repeat(act.high[None], n_action_steps, 0), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.frames = np.zeros((num_envs, n_obs_steps, obs.shape[0]), np.float32)
        self.all_ids = np.arange(num_envs, dtype=np.int32)

    def reset(self, *, seed: int | Sequence[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
            self.pool.close()
            self.pool = make_pool(self.env_id, self.config, seeds, self.threads, self.core)
        obs, _ = self.pool.reset()
        self.frames[:] = flatten(obs)[:, None]
        return self.frames.copy(), {}

    def step_chunks(self, actions: np.ndarray) -> ChunkStep:
        """Execute action chunks (num_envs, n_action_steps, act_dim) and reset the envs whose episode
        ended: the arrays the learner reads, without Gymnasium's info dicts (the training loop's path)."""
        actions = np.asarray(actions, np.float64)
        n = self.num_envs
        rewards, steps = np.zeros(n), np.zeros(n, dtype=np.int64)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        running = self.all_ids
        for k in range(self.n_action_steps):
            obs, reward, term, trunc, info = self.pool.step(actions[running, k], env_id=running)
            ids = info["env_id"]
            self._push(ids, flatten(obs))
            rewards[ids] += reward
            steps[ids] += 1
            terminated[ids], truncated[ids] = term, trunc
            if k + 1 == self.n_action_steps:
                break
            running = np.sort(ids[~(term | trunc)]).astype(np.int32)
            if not len(running):
                break
        ended = terminated | truncated
        final_obs = self.frames.copy()
        if not ended.any():
            return ChunkStep(final_obs, rewards, terminated, truncated, final_obs, steps)
        obs, info = self.pool.reset(np.flatnonzero(ended).astype(np.int32))
        self.frames[info["env_id"]] = flatten(obs)[:, None]
        return ChunkStep(self.frames.copy(), rewards, terminated, truncated, final_obs, steps)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        out = self.step_chunks(actions)
        ended = out.terminated | out.truncated
        infos: dict[str, Any] = {}
        if not ended.all():  # as Gymnasium: a reset env's own info (empty here) hides its chunk's
            infos = {"chunk_steps": np.where(ended, 0, out.steps), "_chunk_steps": ~ended,
                     "is_success": np.zeros(self.num_envs, dtype=bool), "_is_success": ~ended}
        if ended.any():  # SAME_STEP: the finished episodes' last history and chunk info
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(ended):
                final_obs[i] = out.final_obs[i]
            final_info = {"chunk_steps": np.where(ended, out.steps, 0), "_chunk_steps": ended,
                          "is_success": np.zeros(self.num_envs, dtype=bool), "_is_success": ended}
            infos.update({"final_obs": final_obs, "_final_obs": ended, "final_info": final_info, "_final_info": ended})
        return out.obs, out.reward, out.terminated, out.truncated, infos

    def _push(self, ids: np.ndarray, obs: np.ndarray) -> None:
        """Append one observation per env in `ids` to its history (the oldest drops out)."""
        if self.frames.shape[1] > 1:
            self.frames[ids, :-1] = self.frames[ids, 1:]
        self.frames[ids, -1] = obs

    def close_extras(self, **kwargs: Any) -> None:
        self.pool.close()
