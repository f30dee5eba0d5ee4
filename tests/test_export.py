"""ONNX and TorchScript exports reproduce PyTorch on the same noise; a bad trace fails the export."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from deploy_fixtures import tiny_policy

from robopol.export import ExportError, export_policy
from robopol.hardware.backend import EagerBackend, load_exported

ATOL = 1e-4


@pytest.mark.parametrize("kind, backbone", [("flow", "mlp"), ("ddim", "mlp"), ("ddpm", "mlp"), ("flow", "unet"),
                                            ("ddim", "unet")])
def test_exports_match_pytorch_on_same_noise(tmp_path, kind, backbone):
    policy = tiny_policy(kind, backbone=backbone)
    meta = export_policy(policy, tmp_path, source="in-memory", control_rate_hz=25.0)
    eager = EagerBackend(policy)
    rng = np.random.default_rng(123)
    for fmt in ("onnx", "torchscript"):
        backend = load_exported(tmp_path, fmt)
        for trial in range(5):
            obs = rng.normal(size=(1, policy.n_obs_steps, policy.obs_dim)).astype(np.float32) * 3
            noise = rng.normal(size=policy.noise_shape(1)).astype(np.float32) * (trial > 0)
            got, want = backend(obs, noise), eager(obs, noise)
            assert got.shape == (1, policy.horizon, policy.act_dim)
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
        assert meta["files"][fmt]["max_abs_diff"] <= ATOL
        assert meta["files"][fmt]["sha256"] == hashlib.sha256((tmp_path / meta["files"][fmt]["path"]).read_bytes()).hexdigest()


def test_spec_json_describes_the_policy(tmp_path):
    policy = tiny_policy("ddim")
    export_policy(policy, tmp_path, ("onnx",), source="ckpt/x", env_id="InvertedPendulum-v5", control_rate_hz=25.0)
    meta = json.loads((tmp_path / "policy.json").read_text())
    assert (meta["obs_dim"], meta["act_dim"], meta["n_obs_steps"], meta["horizon"], meta["n_action_steps"]) == (4, 1, 2, 8, 4)
    assert meta["noise_shape"] == list(policy.noise_shape(1))
    assert meta["action_low"] == [-3.0] and meta["action_high"] == [3.0]
    assert meta["control_rate_hz"] == 25.0 and meta["source_checkpoint"] == "ckpt/x"
    assert set(meta["files"]) == {"onnx"} and meta["files"]["onnx"]["opset"] >= 13


def test_deterministic_mode_is_zero_noise_and_reproducible(tmp_path):
    policy = tiny_policy("flow")
    export_policy(policy, tmp_path, ("onnx",))
    backend = load_exported(tmp_path, "onnx")
    obs = np.ones((1, 2, 4), np.float32)
    zeros = np.zeros(policy.noise_shape(1), np.float32)
    np.testing.assert_array_equal(backend(obs, zeros), backend(obs, zeros))


class BranchyPolicy(torch.nn.Module):
    """Data-dependent control flow: a trace records one branch only, so parity must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_policy("flow")
        for name in ("obs_dim", "act_dim", "n_obs_steps", "horizon", "n_action_steps", "action_low", "action_high"):
            setattr(self, name, getattr(self.inner, name))

    def noise_shape(self, batch: int) -> tuple[int, ...]:
        return self.inner.noise_shape(batch)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.inner(obs, noise)
        return out if bool(noise.abs().sum() > 0) else out + 1.0  # zero noise takes the other branch


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_parity_failure_fails_loudly(tmp_path, fmt):
    with pytest.raises(ExportError, match=f"{fmt} export .* differs from PyTorch"):
        export_policy(BranchyPolicy(), tmp_path, (fmt,))


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ExportError, match="choose from: onnx, torchscript"):
        export_policy(tiny_policy(), tmp_path, ("tflite",))
