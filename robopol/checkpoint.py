"""Checkpoints: safetensors weights + JSON config (+ trainer state for resuming), written atomically.

Layout of a run folder:
    run_dir/checkpoints/step_<env steps>/{model.safetensors, config.json, trainer_state.safetensors, trainer_state.json,
                                          manifest.json}
    run_dir/checkpoints/LATEST   name of the newest complete checkpoint
A checkpoint is written into a hidden temporary folder, fsynced and renamed into place before LATEST
(itself replaced atomically) points at it, so a SIGKILL at any moment leaves the previous one intact.
At most KEEP checkpoints are kept. manifest.json records the sha256 of every other file; loading
checks each file against it before reading it, so a damaged file is named instead of loading wrong
weights without a word."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robopol.algos.base import algorithm_class
from robopol.config import RunConfig, TaskConfig
from robopol.data.atomic import atomic_output
from robopol.data.normalizer import Normalizer
from robopol.errors import CheckpointError, RobopolError
from robopol.policies.base import Actor, ChunkSpec
from robopol.policies.bundle import PolicyBundle
from robopol.policies.composed import ComposedPolicy, compose_loaded
from robopol.sim.observation_keys import shared_observation
from robopol.typed_config import build, to_dict

FORMAT_VERSION = 1
KEEP = 2
MANIFEST = "manifest.json"
TRAINER_STATE_FILES = ("trainer_state.safetensors", "trainer_state.json")  # verified when resuming reads them


def _split_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Nested state (dicts, lists, tensors, numbers) -> JSON with tensors moved into `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().contiguous().cpu().clone()
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
        verify_files(self.path, TRAINER_STATE_FILES)
        try:
            tensors = load_file(self.path / "trainer_state.safetensors")
            return _join_state(json.loads((self.path / "trainer_state.json").read_text()), tensors)
        except (OSError, json.JSONDecodeError, SafetensorError, UnicodeDecodeError, KeyError) as exc:
            raise CheckpointError(f"corrupt checkpoint {self.path}: unreadable trainer state ({exc})") from None

    def module_weights(self, name: str) -> dict[str, torch.Tensor]:
        prefix = f"{name}."
        return {k[len(prefix):]: v for k, v in self.weights.items() if k.startswith(prefix)}

    def load_into(self, name: str, module: torch.nn.Module, purpose: str) -> None:
        """Load the `name` weights into `module`; a mismatch becomes one error naming `purpose` and the cause."""
        given, wanted = self.module_weights(name), module.state_dict()
        problems = [f"missing {k}" for k in wanted if k not in given] + [f"unexpected {k}" for k in given if k not in wanted]
        problems += [f"{k} is {tuple(given[k].shape)} in the checkpoint, {tuple(v.shape)} here"
                     for k, v in wanted.items() if k in given and given[k].shape != v.shape]
        if problems:
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise CheckpointError(f"{purpose}: {name} weights of {self.path} do not fit this config "
                                  f"({'; '.join(problems[:3])}{more})")
        module.load_state_dict(given)


def save_checkpoint(run_dir: Path, config: RunConfig, spec: ChunkSpec, env_steps: int,
                    modules: dict[str, torch.nn.Module], trainer_state: dict[str, Any], step: int | None = None) -> Path:
    """`step` names the folder (the run's progress: env steps online, gradient steps offline)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".*.tmp"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step_{env_steps if step is None else step:012d}"
    with atomic_output(root / name, directory=True) as folder:
        weights = {f"{m}.{k}": v.detach().contiguous().cpu() for m, module in modules.items() for k, v in module.state_dict().items()}
        save_file(weights, folder / "model.safetensors", metadata={"format_version": str(FORMAT_VERSION)})
        meta = {"format_version": FORMAT_VERSION, "env_steps": env_steps, "spec": spec.__dict__, "config": to_dict(config)}
        (folder / "config.json").write_text(json.dumps(meta, indent=2))
        tensors: dict[str, torch.Tensor] = {}
        state_json = _split_state(trainer_state, "s", tensors)
        save_file(tensors, folder / "trainer_state.safetensors")
        (folder / "trainer_state.json").write_text(json.dumps(state_json))
        digests = {p.name: _sha256(p) for p in sorted(folder.iterdir())}
        (folder / MANIFEST).write_text(json.dumps({"sha256": digests}, indent=2))
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


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_files(folder: Path, names: Iterable[str] | None = None) -> None:
    """Check `names` (default: every file but the trainer state) against the folder's manifest."""
    if not (folder / MANIFEST).is_file():
        if names is None:  # warned once per load, not again for the trainer state
            warnings.warn(f"checkpoint {folder} has no {MANIFEST} (written before checkpoints recorded sha256s); "
                          "its files cannot be verified", stacklevel=2)
        return
    try:
        digests = json.loads((folder / MANIFEST).read_text())["sha256"]
        names = [n for n in digests if n not in TRAINER_STATE_FILES] if names is None else list(names)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {folder}: {MANIFEST} is unreadable ({exc!r})") from None
    for name in names:
        if name not in digests or not (folder / name).is_file():
            what = "is missing" if name in digests else f"has no sha256 in {MANIFEST}"
            raise CheckpointError(f"corrupt checkpoint {folder}: {name} {what}")
        if _sha256(folder / name) != digests[name]:
            raise CheckpointError(f"corrupt checkpoint {folder}: {name} does not match its sha256 in {MANIFEST}; "
                                  "the file was damaged or changed after it was written")


def load_checkpoint(path: str | Path) -> Checkpoint:
    folder = resolve(path)
    verify_files(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint {folder}: config.json is not readable JSON ({exc})") from None
    try:
        weights = load_file(folder / "model.safetensors")
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"corrupt checkpoint {folder}: model.safetensors is unreadable ({exc})") from None
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
                            ckpt.config.sim.obs_clip())
    ckpt.load_into("normalizer", normalizer, "checkpoint")
    return normalizer


def is_composed(ckpt: Checkpoint) -> bool:
    """A composed (GPC) checkpoint folder holds its parents' checkpoints (robopol.compose writes it)."""
    return (ckpt.path / "parent_0").is_dir()


def load_composed(ckpt: Checkpoint) -> ComposedPolicy:
    """The composed policy of a composed checkpoint folder (its manifest already checked by loading it)."""
    folders = sorted(ckpt.path.glob("parent_*"), key=lambda p: int(p.name.split("_")[1]))
    weights = ckpt.weights.get("composition.weights")
    if weights is None or len(weights) != len(folders):
        raise CheckpointError(f"corrupt composed checkpoint {ckpt.path}: no mixing weights for its {len(folders)} parents")
    return compose_checkpoints([load_checkpoint(f) for f in folders], weights.tolist())[0]


def compose_checkpoints(parents: Sequence[Checkpoint], weights: Sequence[float]) -> tuple[ComposedPolicy, TaskConfig]:
    """The composition of parent checkpoints, and the task setting whose observation holds every parent's
    observation keys (the first parent's task when they all observe the same)."""
    names = [str(p.path) for p in parents]
    task, obs_dim, index = shared_observation([p.config.task for p in parents], [p.spec.obs_dim for p in parents],
                                              names)
    policy = compose_loaded([load_policy(p) for p in parents], names, weights, index, obs_dim if index else None)
    return policy, task


def load_policy(source: str | Path | Checkpoint) -> PolicyBundle:
    """Everything needed to act from a checkpoint alone: the policy bundle (actor, normaliser and
    sampler settings), in eval mode."""
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    if is_composed(ckpt):
        return load_composed(ckpt)  # type: ignore[return-value]  (a PolicyBundle's interface)
    actor = algorithm_class(ckpt.config.policy.algo.name).served_actor(restore_actor(ckpt), ckpt)
    return PolicyBundle({"actor": actor}, restore_normalizer(ckpt), ckpt.config.policy.eval_noise).eval()
