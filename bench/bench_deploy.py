"""Deploy benchmark (run by hand, not in CI): inference latency per backend, and the control loop
against two robot sides, the C reference robot and the Python simulated robot.

    python bench/bench_deploy.py [--parts inference loop unet] [--cycles 10000] [--calls 3000] [--rates 100 500]

1. inference: latency, one thread, batch 1, of eager PyTorch vs TorchScript vs ONNX Runtime for a
   state-based flow policy (K=10 Euler steps, chunk 8) and diffusion policies (DDIM 5, DDPM 20).
2. loop: an ONNX flow policy (4 -> 1, chunk 8) driven for `cycles` cycles at each rate against each
   robot side, which the bench starts and deploy reaches as a real robot (a hardware file without a
   `sim` block): the C reference robot (hardware/reference_robot/robot.c, built here) and the Python
   simulated robot (InvertedPendulum-v5). Per run: wake-up jitter, deadline misses, skipped ticks,
   holds, drops, lost datagrams, and the end-to-end command latency: the robot's receive time of each
   cycle's ACTION minus the robot's send time of the observation that cycle used, and of that the
   ACTION's transit (robot's receive time minus the ACTION's header timestamp); both sides read
   CLOCK_MONOTONIC of this machine. The end-to-end figure includes the wait for the loop's next tick,
   which depends on the phase between robot and loop clocks. The 1-minute load average is recorded.
3. unet: latency of the temporal U-Net recipes (policies/bc_flow_unet.yaml: Euler 10,
   bc_diffusion_unet.yaml: DDIM 10) beside the same samplers on the MLP (256x3), at their chunking
   (2 frames observed, 16 actions predicted) and PushT's keypoint observation size, eager and ONNX.
Writes bench/out/bench_deploy.json (a part that ran replaces its section, the others are kept),
bench/out/bench_deploy.png (inference), bench/out/bench_deploy_loop.png (loop) and prints markdown tables."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robopol.data.normalizer import Normalizer
from robopol.hardware.config import find_hardware_file, load_hardware_config
from robopol.hardware.deploy import load_backend, run_deploy
from robopol.hardware.reference_robot import ReferenceRobot, build
from robopol.hardware.sim_server import SimRobotServer, SimServerConfig
from robopol.policies.base import ChunkSpec
from robopol.policies.diffusion import DiffusionActor
from robopol.policies.flow import FlowActor
from robopol.policies.bundle import PolicyBundle
from robopol.typed_config import to_dict

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


def loop_config(rate: float, port: int) -> Any:
    """The reference robot's hardware file at `rate`, no observation bounds (the pendulum's state is not
    the C plant's), a watchdog loose enough that the figures measure timing rather than holds."""
    cfg = load_hardware_config(find_hardware_file("reference_robot"))
    data = {k: to_dict(v) for k, v in cfg.__dict__.items()}
    data.update(control_rate_hz=rate, clock_spin_s=min(0.002, 0.5 / rate), obs_bounds=None,
                robot={"host": "127.0.0.1", "port": port, "connect_timeout_s": 5.0},
                watchdog={"obs_timeout_s": 0.02, "max_deadline_misses": 5, "hold_timeout_s": 0.5})
    return load_hardware_config(data)


def robot_side(side: str, rate: float, action_log: Path, exe: Path) -> ReferenceRobot | SimRobotServer:
    if side == "C robot":
        return ReferenceRobot(exe, rate=rate, action_log=action_log)
    return SimRobotServer(SimServerConfig("InvertedPendulum-v5", rate, action_log=str(action_log)))


def loop_run(side: str, rate: float, cycles: int, policy: PolicyBundle, exe: Path) -> dict:
    tag = f"{'c' if side == 'C robot' else 'python'}_{int(rate)}hz"
    log, actions = OUT / f"loop_{tag}.csv", OUT / f"actions_{tag}.txt"
    load_before = os.getloadavg()[0]
    with robot_side(side, rate, actions, exe) as robot:
        summary = run_deploy(loop_config(rate, robot.port), policy, cycles=cycles, log_path=log, echo=False)
    rows = np.genfromtxt(log, delimiter=",", names=True)
    received, action_sent = np.loadtxt(actions)[:cycles].T  # one ACTION per cycle, in order (no drops: checked)
    e2e = (received - rows["obs_robot_time"][: len(received)]) * 1e3
    transit = (received - action_sent) * 1e3
    out = {k: summary[k] for k in ("cycles", "rate_hz_achieved", "jitter_ms", "work_ms", "deadline_misses",
                                   "skipped_ticks", "starved_cycles", "hold_cycles", "inference_latency_ms",
                                   "dropped_packets", "lost_packets")}
    out.update(robot=robot.stats, load_avg_1min=[load_before, os.getloadavg()[0]],
               e2e_latency_ms=percentiles(e2e), action_transit_ms=percentiles(transit))
    out["samples"] = {"lateness_ms": rows["lateness_ms"].tolist(), "e2e_ms": e2e.tolist()}
    return out


def percentiles(ms: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["inference", "loop", "unet"], choices=["inference", "loop", "unet"])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    path = OUT / "bench_deploy.json"
    results: dict = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = {"torch": torch.__version__, "cpus": os.cpu_count()}
    if "inference" in args.parts:
        results["latency_ms"], samples = inference_part(args.calls)
        plot_inference(samples)
    if "unet" in args.parts:
        results["unet_latency_ms"] = unet_part(args.calls)
    if "loop" in args.parts:
        results["loop"] = loop_part(args.rates, args.cycles)
        plot_loop(results["loop"])
        for run in results["loop"].values():
            run.pop("samples")
    path.write_text(json.dumps(results, indent=2))
    print_tables(results)


def inference_part(calls: int) -> tuple[dict, dict]:
    out, samples = {}, {}
    for name, policy in policies().items():
        for kind in ("eager", "torchscript", "onnx"):
            ms = latency(load_backend(kind, policy), calls)
            samples[(name, kind)] = ms
            out[f"{name} / {kind}"] = {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}
    return out, samples


def unet_part(calls: int) -> dict:
    """The U-Net recipes against the MLP with the same sampler and chunking, one after another; the
    1-minute load average before and after is recorded."""
    from robopol.config import load_run_config

    obs_dim = 20  # PushT keypoints: 9 block keypoints + the agent, (x, y) each
    out: dict = {"load_avg_1min": [os.getloadavg()[0]]}
    for recipe in ("bc_flow_unet", "bc_diffusion_unet"):
        cfg = load_run_config(["task=pusht", f"policy={recipe}"]).policy
        spec = ChunkSpec(obs_dim, 2, cfg.n_obs_steps, cfg.horizon, cfg.n_action_steps)
        norm = Normalizer(obs_dim, -np.ones(2), np.ones(2))
        for backbone in ("unet", "mlp"):
            torch.manual_seed(0)
            actor_cfg = type(cfg.actor)(**{**to_dict(cfg.actor), "backbone": backbone, "hidden": [256, 256, 256]})
            policy = PolicyBundle({"actor": actor_cfg.build(spec)}, norm).eval()
            for kind in ("eager", "onnx"):
                out[f"{recipe} / {backbone} / {kind}"] = percentiles(latency(load_backend(kind, policy), calls))
    out["load_avg_1min"].append(os.getloadavg()[0])
    return out


def loop_part(rates: list[float], cycles: int) -> dict:
    spec = ChunkSpec(4, 1, N_OBS, HORIZON, N_ACT)
    torch.manual_seed(0)
    policy = PolicyBundle({"actor": FlowActor(spec, HIDDEN, num_steps=10)}, Normalizer(4, -3 * np.ones(1), 3 * np.ones(1))).eval()
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        return {f"{side} {rate:g} Hz": loop_run(side, rate, cycles, policy, exe)
                for rate in rates for side in ("C robot", "Python robot")}


def print_tables(results: dict) -> None:
    if "unet_latency_ms" in results:
        print("| recipe / backbone / backend | p50 ms | p99 ms |\n|---|---|---|")
        for key, v in results["unet_latency_ms"].items():
            if key != "load_avg_1min":
                print(f"| {key} | {v['p50']:.3f} | {v['p99']:.3f} |")
    if "latency_ms" in results:
        print("| policy / backend | p50 ms | p99 ms |\n|---|---|---|")
        for key, v in results["latency_ms"].items():
            print(f"| {key} | {v['p50']:.3f} | {v['p99']:.3f} |")
    if "loop" in results:
        print("\n| robot, rate | cycles | achieved Hz | jitter p50 / p99 / max ms | misses | skipped | holds | "
              "dropped + lost | end-to-end p50 / p99 / max ms | ACTION transit p50 / p99 ms | load avg |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for key, v in results["loop"].items():
            j, e, t = v["jitter_ms"], v["e2e_latency_ms"], v["action_transit_ms"]
            lost = sum(v["dropped_packets"].values()) + v["lost_packets"]
            print(f"| {key} | {v['cycles']} | {v['rate_hz_achieved']:.2f} | {j['p50']:.3f} / {j['p99']:.3f} / "
                  f"{j['max']:.2f} | {v['deadline_misses']} | {v['skipped_ticks']} | {v['hold_cycles']} | {lost} | "
                  f"{e['p50']:.2f} / {e['p99']:.2f} / {e['max']:.2f} | {t['p50']:.3f} / {t['p99']:.3f} | "
                  f"{v['load_avg_1min'][0]:.2f}-{v['load_avg_1min'][1]:.2f} |")


def plot_inference(samples: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(samples)
    ax.boxplot([samples[k] for k in names], showfliers=False, whis=(1, 99))
    ax.set_xticks(range(1, len(names) + 1), [f"{a}\n{b}" for a, b in names], rotation=60, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("inference latency (ms), whiskers p1-p99")
    fig.tight_layout()
    fig.savefig(OUT / "bench_deploy.png", dpi=120)


def plot_loop(runs: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, run in runs.items():
        ax1.hist(run["samples"]["lateness_ms"], bins=200, histtype="step", label=key, log=True)
        ax2.hist(run["samples"]["e2e_ms"], bins=200, histtype="step", label=key, log=True)
    ax1.set_xlabel("loop wake-up lateness (ms)")
    ax2.set_xlabel("end-to-end: robot receives ACTION - robot sent the observation (ms)")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "bench_deploy_loop.png", dpi=120)


if __name__ == "__main__":
    main()
