"""One call signature for every way of running a policy: eager PyTorch, TorchScript, ONNX Runtime.

`backend(obs, noise) -> actions` with float32 numpy arrays: obs (1, n_obs_steps, obs_dim) in raw
units, noise of the policy's noise shape, actions (1, horizon, act_dim) in env units, clipped.
All run on one thread, so a control loop and a simulated robot sharing a small CPU do not fight
over cores, and latency figures mean the same thing on every machine."""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robopol.errors import CheckpointError

SPEC_FILE = "policy.json"
BACKENDS = ("eager", "torchscript", "onnx")


@dataclass(frozen=True)
class PolicySpec:
    """What a controller must know about a policy without running it."""

    obs_dim: int
    act_dim: int
    n_obs_steps: int
    horizon: int
    n_action_steps: int
    noise_shape: tuple[int, ...]
    action_low: np.ndarray
    action_high: np.ndarray

    @classmethod
    def of(cls, policy: Any) -> PolicySpec:
        return cls(int(policy.obs_dim), int(policy.act_dim), int(policy.n_obs_steps), int(policy.horizon),
                   int(policy.n_action_steps), tuple(int(d) for d in policy.noise_shape(1)),
                   np.asarray(policy.action_low, dtype=np.float32), np.asarray(policy.action_high, dtype=np.float32))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicySpec:
        return cls(data["obs_dim"], data["act_dim"], data["n_obs_steps"], data["horizon"], data["n_action_steps"],
                   tuple(data["noise_shape"]), np.asarray(data["action_low"], dtype=np.float32),
                   np.asarray(data["action_high"], dtype=np.float32))

    def to_json(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "n_obs_steps": self.n_obs_steps,
                "horizon": self.horizon, "n_action_steps": self.n_action_steps, "noise_shape": list(self.noise_shape),
                "obs_shape": [1, self.n_obs_steps, self.obs_dim], "action_shape": [1, self.horizon, self.act_dim],
                "action_low": self.action_low.tolist(), "action_high": self.action_high.tolist()}


class InferenceBackend(abc.ABC):
    name: str

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray: ...


class TorchModuleBackend(InferenceBackend):
    """A torch module called single-threaded under inference mode (eager or TorchScript)."""

    def __init__(self, module: torch.nn.Module, spec: PolicySpec) -> None:
        super().__init__(spec)
        torch.set_num_threads(1)
        self.module = module.eval()

    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(obs), torch.from_numpy(noise)).numpy()


class EagerBackend(TorchModuleBackend):
    name = "eager"

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__(policy, PolicySpec.of(policy))


class TorchScriptBackend(TorchModuleBackend):
    name = "torchscript"

    def __init__(self, path: Path, spec: PolicySpec) -> None:
        super().__init__(torch.jit.load(str(path), map_location="cpu"), spec)


class OnnxBackend(InferenceBackend):
    name = "onnx"

    def __init__(self, path: Path, spec: PolicySpec) -> None:
        super().__init__(spec)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"obs": obs, "noise": noise})[0]


def read_export(export_dir: Path) -> dict[str, Any]:
    path = Path(export_dir) / SPEC_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the export spec ({exc})") from None


def load_exported(export_dir: Path, kind: str) -> InferenceBackend:
    """A TorchScript or ONNX backend from a directory written by `robopol.export.export_policy`."""
    meta = read_export(export_dir)
    files = meta.get("files", {})
    if kind not in files:
        raise CheckpointError(f"{export_dir} holds no '{kind}' export; it has: {', '.join(files) or 'none'}")
    path = Path(export_dir) / files[kind]["path"]
    spec = PolicySpec.from_json(meta)
    return TorchScriptBackend(path, spec) if kind == "torchscript" else OnnxBackend(path, spec)
