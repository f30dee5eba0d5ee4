"""Checkpoints: safetensors weights + JSON config (+ trainer state for resuming), written atomically.

Layout of a run folder:
    run_dir/checkpoints/step_<env steps>/{model.safetensors, config.json, trainer_state.safetensors, trainer_state.json}
    run_dir/checkpoints/LATEST   name of the newest complete checkpoint
A checkpoint is written into a hidden temporary folder, fsynced and renamed into place before LATEST
(itself replaced atomically) points at it, so a SIGKILL at any moment leaves the previous one intact.
At most KEEP checkpoints are kept."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robopol.config import RunConfig
from robopol.data.atomic import atomic_output
from robopol.data.normalizer import Normalizer
from robopol.errors import CheckpointError, RobopolError
from robopol.policies.base import Actor, ChunkSpec
from robopol.policies.bundle import PolicyBundle
from robopol.typed_config import build, to_dict

FORMAT_VERSION = 1
KEEP = 2


def _split_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Nested state (dicts, lists, tensors, numbers) -> JSON with tensors moved into `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_split_state(k, f"{prefix}.k{i}", tensors), _split_state(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    return obj


def _join_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {_join_state(k, tensors): _join_state(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, dict) and "__list__" in obj:
        items = [_join_state(v, tensors) for v in obj["__list__"]]
        return tuple(items) if obj["tuple"] else items
    return obj


@dataclass
class Checkpoint:
    path: Path
    config: RunConfig
    spec: ChunkSpec
    env_steps: int
    weights: dict[str, torch.Tensor]

    def trainer_state(self) -> dict[str, Any]:
        tensors = load_file(self.path / "trainer_state.safetensors")
        return _join_state(json.loads((self.path / "trainer_state.json").read_text()), tensors)

    def module_weights(self, name: str) -> dict[str, torch.Tensor]:
        prefix = f"{name}."
        return {k[len(prefix):]: v for k, v in self.weights.items() if k.startswith(prefix)}

    def load_into(self, name: str, module: torch.nn.Module, purpose: str) -> None:
        """Load the `name` weights into `module`; a mismatch becomes one error naming `purpose` and the cause."""
        try:
            module.load_state_dict(self.module_weights(name))
        except RuntimeError as exc:
            raise CheckpointError(f"{purpose}: {name} weights of {self.path} do not fit this config "
                                  f"({str(exc).splitlines()[0]})") from None


def save_checkpoint(run_dir: Path, config: RunConfig, spec: ChunkSpec, env_steps: int,
                    modules: dict[str, torch.nn.Module], trainer_state: dict[str, Any], step: int | None = None) -> Path:
    """`step` names the folder (the run's progress: env steps online, gradient steps offline)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".*.tmp"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step_{env_steps if step is None else step:012d}"
    with atomic_output(root / name, directory=True) as folder:
        weights = {f"{m}.{k}": v.detach().contiguous() for m, module in modules.items() for k, v in module.state_dict().items()}
        save_file(weights, folder / "model.safetensors", metadata={"format_version": str(FORMAT_VERSION)})
        meta = {"format_version": FORMAT_VERSION, "env_steps": env_steps, "spec": spec.__dict__, "config": to_dict(config)}
        (folder / "config.json").write_text(json.dumps(meta, indent=2))
        tensors: dict[str, torch.Tensor] = {}
        state_json = _split_state(trainer_state, "s", tensors)
        save_file(tensors, folder / "trainer_state.safetensors")
        (folder / "trainer_state.json").write_text(json.dumps(state_json))
    with atomic_output(root / "LATEST") as latest:
        latest.write_text(name)
    for old in sorted(p for p in root.glob("step_*") if p.name != name)[:-(KEEP - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def resolve(path: str | Path) -> Path:
    """A run folder, its checkpoints folder or one checkpoint folder -> the checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} does not exist")
    for root in (path / "checkpoints", path):
        latest = root / "LATEST"
        if latest.is_file():
            target = root / latest.read_text().strip()
            if not target.is_dir():
                raise CheckpointError(f"corrupt checkpoint folder {root}: LATEST names {target.name}, which is missing")
            return target
    if (path / "config.json").is_file() and (path / "model.safetensors").exists():
        return path
    raise CheckpointError(f"no checkpoint in {path}: expected a run folder with checkpoints/LATEST "
                          "or a folder holding model.safetensors and config.json")


def load_checkpoint(path: str | Path) -> Checkpoint:
    folder = resolve(path)
    try:
        meta = json.loads((folder / "config.json").read_text())
        weights = load_file(folder / "model.safetensors")
    except (OSError, json.JSONDecodeError, SafetensorError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {folder}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {folder}: format_version {meta.get('format_version') if isinstance(meta, dict) else None!r}"
                              f" is not the supported {FORMAT_VERSION}")
    try:
        config = build(RunConfig, meta["config"], "checkpoint.config")
        spec = ChunkSpec(**meta["spec"])
    except (RobopolError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: unreadable config.json ({exc})") from None
    return Checkpoint(folder, config, spec, int(meta["env_steps"]), weights)


def restore_actor(ckpt: Checkpoint) -> Actor:
    """The served actor, shaped as the run shaped it (a fine-tuning run prepared it for fine-tuning)."""
    actor = ckpt.config.policy.actor.build(ckpt.spec)
    if ckpt.config.train.pretrained:
        actor.prepare_finetuning()
    ckpt.load_into("actor", actor, "checkpoint")
    return actor


def restore_normalizer(ckpt: Checkpoint) -> Normalizer:
    weights = ckpt.module_weights("normalizer")
    if "action_low" not in weights:
        raise CheckpointError(f"checkpoint {ckpt.path}: no normaliser statistics in model.safetensors")
    normalizer = Normalizer(ckpt.spec.obs_dim, weights["action_low"].numpy(), weights["action_high"].numpy(),
                            ckpt.config.sim.clip_obs)
    ckpt.load_into("normalizer", normalizer, "checkpoint")
    return normalizer


def load_policy(source: str | Path | Checkpoint) -> PolicyBundle:
    """Everything needed to act from a checkpoint alone: the policy bundle (actor, normaliser and
    sampler settings), in eval mode."""
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    return PolicyBundle({"actor": restore_actor(ckpt)}, restore_normalizer(ckpt), ckpt.config.policy.eval_noise).eval()
