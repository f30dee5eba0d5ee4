"""Deploy benchmark (run by hand, not in CI): inference latency per backend and control-loop timing.

    python bench/bench_deploy.py [--cycles 10000] [--calls 3000]

1. Inference latency, one thread, batch 1, of eager PyTorch vs TorchScript vs ONNX Runtime for a
   state-based flow policy (K=10 Euler steps, chunk 8) and diffusion policies (DDIM 5, DDPM 20).
2. Loop jitter and deadline misses at 50 and 100 Hz against the simulated robot process
   (InvertedPendulum-v5), ONNX flow policy.
Writes bench/out/bench_deploy.json and bench/out/bench_deploy.png and prints markdown tables."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from robopol.data.normalizer import Normalizer
from robopol.hardware.config import load_hardware_config
from robopol.hardware.deploy import load_backend, run_deploy
from robopol.policies.base import ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.bundle import PolicyBundle

OUT = Path(__file__).resolve().parent / "out"
OBS_DIM, ACT_DIM, N_OBS, HORIZON, N_ACT = 11, 3, 2, 8, 4  # Hopper-sized state, chunk 8
HIDDEN = (256, 256)


def policies() -> dict[str, PolicyBundle]:
    torch.manual_seed(0)
    spec = ChunkSpec(OBS_DIM, ACT_DIM, N_OBS, HORIZON, N_ACT)
    norm = lambda: Normalizer(OBS_DIM, -np.ones(ACT_DIM), np.ones(ACT_DIM))  # noqa: E731
    return {"flow K=10": PolicyBundle({"actor": FlowActor(spec, HIDDEN, num_steps=10)}, norm()).eval(),
            "DDIM 5": PolicyBundle({"actor": DiffusionActor(spec, HIDDEN, denoising_steps=100, ddim_steps=5)}, norm()).eval(),
            "DDPM 20": PolicyBundle({"actor": DiffusionActor(spec, HIDDEN, denoising_steps=20)}, norm()).eval()}


def latency(backend, calls: int) -> np.ndarray:
    spec = backend.spec
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((1, spec.n_obs_steps, spec.obs_dim)).astype(np.float32)
    noise = np.zeros(spec.noise_shape, np.float32)
    for _ in range(50):
        backend(obs, noise)
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        backend(obs, noise)
        out[i] = time.perf_counter() - start
    return out * 1e3


def loop_timing(rate: float, cycles: int, policy: PolicyBundle) -> dict:
    cfg = load_hardware_config("sim_inverted_pendulum")
    cfg.control_rate_hz = rate
    cfg.sim.rate_hz = rate
    cfg.inference.backend = "onnx"
    log = OUT / f"loop_{int(rate)}hz.csv"
    summary = run_deploy(cfg, policy, cycles=cycles, log_path=log, echo=False)
    lateness = np.genfromtxt(log, delimiter=",", names=True, usecols=(2,))["lateness_ms"]
    summary["lateness_ms_samples"] = lateness.tolist()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--cycles", type=int, default=10_000)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    results: dict = {"latency_ms": {}, "loop": {}, "machine": {"torch": torch.__version__}}
    samples = {}
    pendulum_flow = None
    for name, policy in policies().items():
        for kind in ("eager", "torchscript", "onnx"):
            ms = latency(load_backend(kind, policy), args.calls)
            samples[(name, kind)] = ms
            results["latency_ms"][f"{name} / {kind}"] = {"p50": float(np.percentile(ms, 50)),
                                                          "p99": float(np.percentile(ms, 99))}
    spec = ChunkSpec(4, 1, N_OBS, HORIZON, N_ACT)
    torch.manual_seed(0)
    pendulum_flow = PolicyBundle({"actor": FlowActor(spec, HIDDEN, num_steps=10)},
                                    Normalizer(4, -3 * np.ones(1), 3 * np.ones(1))).eval()
    for rate in (50.0, 100.0):
        s = loop_timing(rate, args.cycles, pendulum_flow)
        results["loop"][f"{rate:g} Hz"] = {k: s[k] for k in ("cycles", "rate_hz_achieved", "jitter_ms", "work_ms",
                                                              "deadline_misses", "skipped_ticks", "starved_cycles",
                                                              "inference_latency_ms", "dropped_packets")}
        samples[("loop", rate)] = np.asarray(s["lateness_ms_samples"])
    (OUT / "bench_deploy.json").write_text(json.dumps(results, indent=2))
    plot(samples)
    print("| policy / backend | p50 ms | p99 ms |\n|---|---|---|")
    for key, v in results["latency_ms"].items():
        print(f"| {key} | {v['p50']:.3f} | {v['p99']:.3f} |")
    print("\n| loop | cycles | achieved Hz | jitter p50 ms | jitter p99 ms | jitter max ms | deadline misses | skipped |")
    print("|---|---|---|---|---|---|---|---|")
    for key, v in results["loop"].items():
        j = v["jitter_ms"]
        print(f"| {key} | {v['cycles']} | {v['rate_hz_achieved']:.2f} | {j['p50']:.3f} | {j['p99']:.3f} | "
              f"{j['max']:.3f} | {v['deadline_misses']} | {v['skipped_ticks']} |")


def plot(samples: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [k for k in samples if k[0] != "loop"]
    ax1.boxplot([samples[k] for k in names], showfliers=False, whis=(1, 99))
    ax1.set_xticks(range(1, len(names) + 1), [f"{a}\n{b}" for a, b in names], rotation=60, fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("inference latency (ms), whiskers p1-p99")
    for key in (k for k in samples if k[0] == "loop"):
        ax2.hist(samples[key], bins=200, histtype="step", label=f"{key[1]:g} Hz", log=True)
    ax2.set_xlabel("wake-up lateness (ms)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(OUT / "bench_deploy.png", dpi=120)


if __name__ == "__main__":
    main()
