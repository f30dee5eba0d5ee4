"""Benchmark: QGF beside unguided BC on PushT and Lift, each from a mixed-quality dataset.

Per entry, with the CLI alone (every setting is in policies/qgf_<entry>.yaml, whose header holds the commands):
1. `robopol demos TASK --mix ...`: the expert at two noise levels plus uniformly random (failing) episodes;
2. `robopol pretrain policy=qgf_ENTRY`: one run trains the BC flow actor and the IQL critic (pusht_critic:
   only the critic, beside bench_gpc.py's PushT parent A, a BC checkpoint of the mix's clean episodes);
3. `robopol sweep RUN`: w = 0 (plain BC) and the official guidance weights, best-of-N off (1) and on (8),
   on the task's evaluation seeds;
4. the best guided setting on those seeds (success, then PushT score, then the smaller N and w) and
   plain BC (w = 0, N = 1: the same checkpoint) are evaluated again on held-out seeds no sweep saw;
5. a check of the critic that guides: at states of the clean expert episodes, how often its min-Q
   rates the expert's own chunk above a uniformly random chunk, the expert's chunk plus noise, and a chunk
   from one of the mix's other episodes; and what best-of-8 sees there (`best_of_n_check`).
Results go to bench/out/qgf/ (qgf.json, qgf_sweep.png); copy them to bench/results/ for the README.
Stages whose output exists are skipped, so a re-run only aggregates:

    nice -n 5 env OMP_NUM_THREADS=1 python bench/bench_qgf.py [--tasks pusht lift pusht_critic]

Not run in CI: PushT about 35 minutes of one core, Lift about 45 (one hour beside another run), pusht_critic
about 35 once parent A exists."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robopol.algos.qgf import build_critic  # noqa: E402
from robopol.checkpoint import load_checkpoint, load_policy, restore_normalizer  # noqa: E402
from robopol.data.datasets import load_demonstrations  # noqa: E402
from robopol.eval_settings import plot_sweep, with_eval_settings  # noqa: E402
from robopol.evaluate import evaluate  # noqa: E402
from robopol.sim.factory import EVAL_SEED_BASE  # noqa: E402

OUT = Path(__file__).parent / "out" / "qgf"
HELD_OUT_SEED_BASE = EVAL_SEED_BASE + 1_000_000  # as bench_benchmarks.py: seeds no in-run evaluation or sweep sees
WEIGHTS = (0.004, 0.008, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)  # the paper's sweep
BEST_OF_N = (1, 8)
# Each mix is the README BC-flow row's demonstrations (PushT 200, Lift 40) plus noisier and uniformly random
# episodes; 200 held-out episodes each; sweep points of 50 episodes on PushT and 20 on Lift (robosuite runs
# ~70 env steps/s and failures run 300 steps).
# "pusht_critic": QGF's cheapest use, a critic learnt beside a BC checkpoint a user already has (bench_gpc.py's
# PushT parent A, on the mix's 200 clean demonstrations) from PushT's mixed dataset, the actor untouched.
TASKS: dict[str, dict[str, Any]] = {
    "pusht": {"mix": "2.0:200,20.0:50,random:50", "sweep_episodes": 50, "held_out": 200},
    "lift": {"mix": "0.15:40,0.6:30,random:10", "sweep_episodes": 20, "held_out": 200},
    "pusht_critic": {"task": "pusht", "mix": "2.0:200,20.0:50,random:50", "sweep_episodes": 50, "held_out": 200,
                     "pretrained": Path(__file__).parent / "out" / "gpc" / "pusht-a"},
}


def cli(*args: str) -> dict[str, Any]:
    """Run `robopol ARGS` and return its last JSON line."""
    done = subprocess.run([sys.executable, "-m", "robopol.cli", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def critic_ranking(run: Path, data: Path, clean_episodes: int, per_episode: int = 10) -> dict[str, float]:
    """P(min-Q of the expert's chunk > min-Q of an alternative) at states of the first `clean_episodes`
    episodes (the mix's clean expert), `per_episode` random steps of each, fixed generator."""
    ckpt = load_checkpoint(run)
    normalizer, spec = restore_normalizer(ckpt), ckpt.spec
    critic = build_critic(ckpt.config.policy, spec)
    ckpt.load_into("q_target", critic, "the critic check")
    episodes = load_demonstrations(data, ckpt.config.task).episodes
    clean, others = episodes[:clean_episodes], episodes[clean_episodes:]
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)

    def chunk(ep: Any, t: int) -> torch.Tensor:
        rows = np.minimum(np.arange(t, t + spec.horizon), len(ep.actions) - 1)  # the last action repeats past the end
        return normalizer.normalize_action(torch.as_tensor(ep.actions[rows], dtype=torch.float32))

    obs, expert, other = [], [], []
    for ep in clean:
        for t in rng.choice(len(ep.actions), size=min(per_episode, len(ep.actions)), replace=False):
            window = np.maximum(np.arange(t - spec.n_obs_steps + 1, t + 1), 0)
            obs.append(normalizer.normalize_obs(torch.as_tensor(ep.flat_obs[window], dtype=torch.float32)))
            expert.append(chunk(ep, t))
            pick = others[rng.integers(len(others))]
            other.append(chunk(pick, int(rng.integers(len(pick.actions)))))
    states, good = torch.stack(obs), torch.stack(expert)
    alternatives = {"uniform": torch.rand(good.shape, generator=gen) * 2 - 1,
                    "expert_plus_noise_0.3": (good + 0.3 * torch.randn(good.shape, generator=gen)).clamp(-1, 1),
                    "other_episodes": torch.stack(other)}
    with torch.no_grad():
        q_good = critic(states, good).min(dim=0).values
        ranking = {f"p_expert_above_{name}": (q_good > critic(states, a).min(dim=0).values).float().mean().item()
                   for name, a in alternatives.items()}
    return {"states": len(states), **ranking, **best_of_n_check(ckpt, critic, states, good, gen)}


def best_of_n_check(ckpt: Any, critic: torch.nn.Module, states: torch.Tensor, expert: torch.Tensor,
                    gen: torch.Generator, n: int = 8) -> dict[str, float]:
    """What best-of-N sees at those states: n chunks of the BC actor per state, their min-Q, and their
    distance to the expert's chunk (normalised actions). An informative critic picks a chunk nearer the
    expert than a random one, and its Q varies with the action, not only with the state."""
    actor = load_policy(ckpt).actor
    batch, spec = len(states), ckpt.spec
    with torch.no_grad():
        obs = states.repeat_interleave(n, 0)
        chunks = actor.sample(obs, torch.randn(batch * n, spec.horizon, spec.act_dim, generator=gen))
        q = critic(obs, chunks).min(dim=0).values.view(batch, n)
        dist = (chunks.view(batch, n, -1) - expert.view(batch, 1, -1)).norm(dim=-1)
        q_expert = critic(states, expert).min(dim=0).values
    qc, dc = q - q.mean(1, keepdim=True), dist - dist.mean(1, keepdim=True)
    corr = -(qc * dc).sum(1) / (qc.norm(dim=1) * dc.norm(dim=1)).clamp(min=1e-12)
    return {"best_of_n": n,
            "median_distance_argmax_q": dist[torch.arange(batch), q.argmax(1)].median().item(),
            "median_distance_random": dist[:, 0].median().item(),
            "median_distance_nearest": dist.min(1).values.median().item(),
            "mean_corr_q_closeness": corr.mean().item(),
            "p_expert_above_argmax_q": (q_expert > q.max(1).values).float().mean().item(),
            "q_std_within_state": q.std(1).median().item(), "q_std_across_states": q.mean(1).std().item()}


def run_task(name: str) -> dict[str, Any]:
    spec = TASKS[name]
    task = spec.get("task", name)
    data, run = OUT / f"{task}_mixed.hdf5", OUT / f"{name}-qgf"
    timing: dict[str, float] = {}
    if not data.exists():
        start = time.perf_counter()
        stats = cli("demos", task, "--mix", spec["mix"], "--seed", "1000", "--out", str(data))
        data.with_suffix(".json").write_text(json.dumps(stats))
        timing["demos_s"] = time.perf_counter() - start
    if not (run / "checkpoints" / "LATEST").exists():
        start = time.perf_counter()
        if "pretrained" in spec and not (spec["pretrained"] / "checkpoints").exists():
            raise SystemExit(f"{name}: needs the BC checkpoint {spec['pretrained']} (python bench/bench_gpc.py --tasks pusht)")
        pretrained = [f"train.pretrained={spec['pretrained']}"] if "pretrained" in spec else []
        cli("pretrain", f"task={task}", f"policy=qgf_{name}", f"policy.algo.dataset={data}", f"train.run_dir={run}",
            "train.progress=false", *pretrained)
        timing["pretrain_s"] = time.perf_counter() - start
    sweep_file = run / "eval" / "sweep" / "sweep.json"
    if not sweep_file.exists():
        start = time.perf_counter()
        cli("sweep", str(run), "--weights", *map(str, WEIGHTS), "--best-of-n", *map(str, BEST_OF_N),
            "--episodes", str(spec["sweep_episodes"]))
        timing["sweep_s"] = time.perf_counter() - start
    sweep = json.loads(sweep_file.read_text())
    guided = [r for r in sweep["rows"] if (r["guidance_weight"], r["best_of_n"]) != (0.0, 1)]
    chosen = max(guided, key=lambda r: (r["success_rate"], r.get("mean_max_reward", 0.0), -r["best_of_n"],
                                        -r["guidance_weight"]))
    held_file = run / "eval" / "held_out.json"
    if not held_file.exists():
        start = time.perf_counter()
        ckpt = load_checkpoint(run)
        held = {}
        for name, w, n in (("bc", 0.0, 1), ("qgf", chosen["guidance_weight"], chosen["best_of_n"])):
            setting = with_eval_settings(ckpt, [f"policy.algo.guidance_weight={w}", f"policy.algo.best_of_n={n}"])
            held[name] = {"guidance_weight": w, "best_of_n": n, **evaluate(
                load_policy(setting), setting.config.task, setting.config.policy, spec["held_out"], HELD_OUT_SEED_BASE)}
        held_file.write_text(json.dumps(held, indent=2))
        timing["held_out_s"] = time.perf_counter() - start
    previous = json.loads((OUT / "qgf.json").read_text()).get(name, {}) if (OUT / "qgf.json").exists() else {}
    demos = json.loads(data.with_suffix(".json").read_text()) if data.with_suffix(".json").exists() else {}
    clean = int(spec["mix"].split(",")[0].split(":")[1])  # the mix's first entry: the clean expert
    return {"mix": spec["mix"], "demos": demos.get("mix"), "recipe": f"policies/qgf_{name}.yaml",
            "critic_ranking": critic_ranking(run, data, clean),
            "sweep_seeds": sweep["seeds"], "held_out_seeds": [HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + spec["held_out"] - 1],
            "chosen": {"guidance_weight": chosen["guidance_weight"], "best_of_n": chosen["best_of_n"]},
            "sweep": sweep["rows"], "held_out": json.loads(held_file.read_text()),
            "timing": {**previous.get("timing", {}), **timing}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        result = run_task(task)
        # Re-read before writing: one process per task may run at once, each adding its own entry.
        results = json.loads((OUT / "qgf.json").read_text()) if (OUT / "qgf.json").exists() else {}
        results[task] = result
        (OUT / "qgf.json").write_text(json.dumps(results, indent=2))
        held = results[task]["held_out"]
        print(f"{task}: BC {held['bc']['success_rate']:.3f} -> QGF {held['qgf']['success_rate']:.3f} "
              f"(w={held['qgf']['guidance_weight']:g}, N={held['qgf']['best_of_n']}) on held-out seeds", flush=True)
    plot_sweep([{"task": t, "rows": r["sweep"]} for t, r in results.items()], OUT / "qgf_sweep.png")


if __name__ == "__main__":
    main()
