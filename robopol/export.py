"""Checkpoint -> ONNX / TorchScript, parity-checked against PyTorch, with a JSON spec beside them.

The whole K-step sampler, normalisation included, becomes one graph with the noise as an explicit
input, so a deployed policy is reproducible bit-for-bit from (obs, noise) and deterministic
sampling is just zero noise. Every exported file is run through the same backend the control loop
uses and compared with eager PyTorch on the same inputs; a mismatch fails the export. policy.json
records each file's sha256, which `verify_export` checks before a file is loaded for deployment."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robopol.errors import RobopolError
from robopol.hardware.backend import (
    SPEC_FILE,
    EagerBackend,
    PolicySpec,
    load_exported,
    read_export,
)

FORMATS = ("onnx", "torchscript")
FILES = {"onnx": "policy.onnx", "torchscript": "policy.ts"}
ONNX_OPSET = 17
PARITY_ATOL = 1e-4
PARITY_CASES = 4


class ExportError(RobopolError):
    """An export that could not be written or does not reproduce the PyTorch policy."""


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, formats: Sequence[str] = FORMATS,
                      settings: Sequence[str] = ()) -> dict[str, Any]:
    """Load a run / checkpoint dir, with evaluation-time `settings` (e.g. QGF's
    policy.algo.guidance_weight=0.02, robopol.eval_settings), and export it; returns the JSON spec
    written to out_dir/policy.json, which records the settings."""
    from robopol.checkpoint import load_checkpoint, load_policy
    from robopol.eval_settings import with_eval_settings
    from robopol.preflight import check_writable

    check_writable(out_dir, "out_dir")
    ckpt = with_eval_settings(load_checkpoint(checkpoint), settings)
    task = ckpt.config.task
    return export_policy(load_policy(ckpt), out_dir, formats, source=str(ckpt.path.resolve()), env_id=task.env_id,
                         control_rate_hz=_control_rate(task), settings=list(settings))


def export_policy(policy: torch.nn.Module, out_dir: str | Path, formats: Sequence[str] = FORMATS, *,
                  source: str | None = None, env_id: str | None = None, control_rate_hz: float | None = None,
                  atol: float = PARITY_ATOL, settings: Sequence[str] = ()) -> dict[str, Any]:
    """Export a policy bundle; raise ExportError if any format differs from PyTorch by more than atol."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"export formats {list(formats)} not allowed; choose from: {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy = policy.eval()
    spec = PolicySpec.of(policy)
    cases = _parity_cases(spec)
    eager = EagerBackend(policy)
    reference = [eager(obs, noise) for obs, noise in cases]
    example = tuple(torch.from_numpy(x) for x in cases[1])
    meta: dict[str, Any] = {"format_version": 1, **spec.to_json(), "batch": 1,
                            "inputs": ["obs", "noise"], "outputs": ["actions"],
                            "noise": "standard normal of noise_shape; zeros = deterministic sampling",
                            "control_rate_hz": control_rate_hz, "env_id": env_id, "source_checkpoint": source,
                            "eval_settings": list(settings),
                            "parity": {"atol": atol, "cases": len(cases)},
                            "versions": {"torch": torch.__version__}, "files": {}}
    for fmt in formats:
        path = out / FILES[fmt]
        with warnings.catch_warnings():  # tracer chatter; parity below is the real check
            warnings.simplefilter("ignore")
            _WRITERS[fmt](policy, example, path)
        meta["files"][fmt] = {"path": path.name, "sha256": _sha256(path)}
        (out / SPEC_FILE).write_text(json.dumps(meta, indent=2))  # the loader reads file names from here
        backend = load_exported(out, fmt)
        diff = max(float(np.max(np.abs(backend(o, n) - ref))) for (o, n), ref in zip(cases, reference))
        if not diff <= atol:
            raise ExportError(f"{fmt} export at {path} differs from PyTorch by max |diff|={diff:.3g} "
                              f"> atol={atol:g}; the policy does not trace faithfully")
        meta["files"][fmt]["max_abs_diff"] = diff
    if "onnx" in formats:
        import onnxruntime

        meta["files"]["onnx"]["opset"] = ONNX_OPSET
        meta["versions"]["onnxruntime"] = onnxruntime.__version__
    (out / SPEC_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def verify_export(export_dir: str | Path, formats: Sequence[str] | None = None) -> None:
    """Check the exported files of `formats` (default: all policy.json lists) against the sha256
    policy.json records, so a truncated or altered graph is named instead of crashing its runtime."""
    meta = read_export(Path(export_dir))
    files = meta.get("files", {})
    for fmt in formats if formats is not None else list(files):
        entry = files.get(fmt)
        if not isinstance(entry, dict) or "path" not in entry or "sha256" not in entry:
            raise ExportError(f"{Path(export_dir) / SPEC_FILE} records no {fmt} file with its sha256; export again")
        path = Path(export_dir) / entry["path"]
        if not path.is_file():
            raise ExportError(f"{path} is missing; {SPEC_FILE} lists it as the {fmt} export")
        if _sha256(path) != entry["sha256"]:
            raise ExportError(f"{path} does not match its sha256 in {SPEC_FILE}; the file was damaged or changed "
                              "after export, export again")


def _write_onnx(policy: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    import onnx

    # The TorchScript-based exporter: the sampler is a fixed python loop, which it unrolls exactly.
    torch.onnx.export(policy, example, str(path), dynamo=False, opset_version=ONNX_OPSET,
                      input_names=["obs", "noise"], output_names=["actions"], do_constant_folding=True)
    onnx.checker.check_model(str(path))


def _write_torchscript(policy: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(policy, example, check_trace=False)
    torch.jit.save(torch.jit.freeze(traced.eval()), str(path))


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript}


def _parity_cases(spec: PolicySpec, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Zero noise (deterministic mode) plus random noise, each with random observations."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(PARITY_CASES):
        obs = rng.standard_normal((1, spec.n_obs_steps, spec.obs_dim)).astype(np.float32)
        noise = rng.standard_normal(spec.noise_shape).astype(np.float32) * (i > 0)
        cases.append((obs, noise.astype(np.float32)))
    return cases


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _control_rate(task: Any) -> float | None:
    """The task env's control rate (1 / dt), which the policy was trained at; None if it has no dt."""
    from robopol.sim.factory import make_base_env

    env = make_base_env(task)
    try:
        dt = getattr(env.unwrapped, "dt", None)
        return 1.0 / float(dt) if dt else None
    finally:
        env.close()
