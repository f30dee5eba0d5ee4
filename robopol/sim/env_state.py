"""Save and restore a running env's state, so a resumed run continues its episodes exactly.

Covered: Gymnasium MuJoCo envs (MuJoCo's full integration state: time, qpos, qvel, act, warm start,
controls, applied forces, mocap), envs that define `robopol_state()` / `robopol_set_state(state)`
(robopol's toy tasks), the env's RNG, and the layers around them (TimeLimit's step count,
OrderEnforcing, robopol's observation history). Any other env (PushT, robosuite, EnvPool) captures as
None: a resumed run then resets it and starts new episodes, so its curve differs from an uninterrupted
run from the resume on."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from robopol.sim.wrappers import ObservationHistory


def capture(env: gym.Env) -> dict[str, Any] | None:
    """The env's state as nested dicts of tensors and numbers, or None if it cannot be captured."""
    base = env.unwrapped
    core = _core_state(base)
    if core is None:
        return None
    layers = []
    layer: Any = env
    while isinstance(layer, gym.Wrapper):
        layers.append(_layer_state(layer))
        layer = layer.env
    return {"core": core, "rng": _rng_state(base), "layers": layers}


def restore(env: gym.Env, state: dict[str, Any]) -> None:
    """Put a captured state back into an env of the same construction."""
    base = env.unwrapped
    _set_core_state(base, state["core"])
    if state["rng"] is not None:
        base.np_random.bit_generator.state = state["rng"]
    layer: Any = env
    for saved in state["layers"]:
        _set_layer_state(layer, saved)
        layer = layer.env


def _core_state(base: gym.Env) -> dict[str, Any] | None:
    if hasattr(base, "robopol_state"):
        return {"robopol": base.robopol_state()}
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    if isinstance(base, MujocoEnv):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buffer = np.empty(mujoco.mj_stateSize(base.model, spec))
        mujoco.mj_getState(base.model, base.data, buffer, spec)
        return {"mujoco": torch.from_numpy(buffer)}
    return None


def _set_core_state(base: gym.Env, core: dict[str, Any]) -> None:
    if "robopol" in core:
        base.robopol_set_state(core["robopol"])  # type: ignore[attr-defined]
        return
    import mujoco

    mujoco.mj_setState(base.model, base.data, core["mujoco"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(base.model, base.data)


def _rng_state(base: gym.Env) -> dict[str, Any] | None:
    rng = getattr(base, "_np_random", None)
    return None if rng is None else rng.bit_generator.state


def _layer_state(layer: gym.Wrapper) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for name in ("_elapsed_steps", "_has_reset", "checked_reset", "checked_step", "checked_data_reuse"):
        if name in vars(layer):
            state[name] = getattr(layer, name)
    if isinstance(layer, ObservationHistory):
        state["frames"] = [torch.from_numpy(frame.copy()) for frame in layer.frames]
    return state


def _set_layer_state(layer: gym.Wrapper, state: dict[str, Any]) -> None:
    for name, value in state.items():
        if name == "frames":
            layer.frames = deque((f.numpy() for f in value), maxlen=layer.frames.maxlen)  # type: ignore[attr-defined]
        else:
            setattr(layer, name, value)
