"""`robopol compose`: write a composed (GPC) checkpoint from parent checkpoints, its weights given or
searched by rollouts.

Layout of a composed checkpoint folder (a checkpoint `robopol eval`, `export` and `deploy` load like any):
    parent_<k>/{model.safetensors, config.json, manifest.json}   each parent's checkpoint, as trained
    config.json       the first parent's run config (task, evaluation settings) with n_obs_steps the
                      longest parent window, the task set to observe every parent's keys
                      (robopol.sim.observation_keys), and "composition": {"weights": [...], "sources": [...]}
    model.safetensors the mixing weights ("composition.weights")
    manifest.json     sha256 of the two files above
A weight search evaluates every point of a grid (step 0.1; for more than two parents the simplex grid)
on the evaluation seeds and keeps the best by success rate (then return); OUT-search.json and
OUT-search.png beside the checkpoint hold every score. Report the chosen policy on other (held-out) seeds."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from robopol.checkpoint import (
    FORMAT_VERSION,
    MANIFEST,
    Checkpoint,
    _sha256,
    compose_checkpoints,
    is_composed,
    load_checkpoint,
)
from robopol.config import TaskConfig
from robopol.data.atomic import atomic_output
from robopol.errors import ConfigError
from robopol.policies.composed import ComposedPolicy
from robopol.typed_config import to_dict

PARENT_FILES = ("model.safetensors", "config.json", MANIFEST)
WEIGHT_SUM_ATOL = 1e-6


def check_weights(weights: Sequence[float], parents: int) -> list[float]:
    """Convex weights, one per parent; anything else is a ConfigError naming --weights."""
    if len(weights) != parents:
        raise ConfigError(f"--weights: {len(weights)} given for {parents} checkpoints; give one per checkpoint")
    if any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > WEIGHT_SUM_ATOL:
        raise ConfigError(f"--weights: {list(weights)} must be >= 0 and sum to 1 (convex), sum is {sum(weights):g}")
    return [float(w) for w in weights]


def weight_grid(parents: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every convex weight vector on a grid of `step` (two parents: (0, 1), (0.1, 0.9), ..., (1, 0))."""
    n = round(1 / step)
    return [tuple(round(c * step, 10) for c in (*head, n - sum(head)))
            for head in itertools.product(range(n + 1), repeat=parents - 1) if sum(head) <= n]


def compose_policies(sources: Sequence[str | Path], weights: Sequence[float]
                     ) -> tuple[ComposedPolicy, list[Checkpoint], TaskConfig]:
    """The composed policy of the checkpoints at `sources`, refused with one line if they do not reconcile,
    and the task setting it is evaluated on (one that observes every parent's keys)."""
    if len(sources) < 2:
        raise ConfigError(f"compose: {len(sources)} checkpoint given; composition needs at least two")
    ckpts = [load_checkpoint(s) for s in sources]
    for ckpt in ckpts:
        if is_composed(ckpt):
            raise ConfigError(f"compose: {ckpt.path} is itself a composed checkpoint; compose its parents instead")
    tasks = {c.config.task.name for c in ckpts}
    if len(tasks) > 1:
        raise ConfigError(f"cannot compose: task differs ({', '.join(f'{c.config.task.name} in {c.path}' for c in ckpts)})")
    policy, task = compose_checkpoints(ckpts, check_weights(weights, len(ckpts)))
    return policy, ckpts, task


def write_composed(ckpts: Sequence[Checkpoint], weights: Sequence[float], out: str | Path, task: TaskConfig,
                   obs_dim: int, extra: dict[str, Any] | None = None) -> Path:
    """The composed checkpoint folder at `out` (written atomically), holding copies of the parents; `task`
    and `obs_dim` are the shared observation's (robopol.sim.observation_keys)."""
    meta = json.loads((ckpts[0].path / "config.json").read_text())
    n_obs = max(c.spec.n_obs_steps for c in ckpts)
    meta["spec"]["n_obs_steps"] = n_obs
    meta["spec"]["obs_dim"] = obs_dim
    meta["config"]["policy"]["n_obs_steps"] = n_obs
    meta["config"]["task"] = to_dict(task)
    meta["composition"] = {"weights": list(weights), "sources": [str(c.path.resolve()) for c in ckpts], **(extra or {})}
    with atomic_output(Path(out), directory=True) as folder:
        for k, ckpt in enumerate(ckpts):
            (folder / f"parent_{k}").mkdir()
            for name in PARENT_FILES:
                if (ckpt.path / name).is_file():
                    shutil.copy2(ckpt.path / name, folder / f"parent_{k}" / name)
        save_file({"composition.weights": torch.tensor(list(weights))}, folder / "model.safetensors",
                  metadata={"format_version": str(FORMAT_VERSION)})
        (folder / "config.json").write_text(json.dumps(meta, indent=2))
        digests = {name: _sha256(folder / name) for name in ("config.json", "model.safetensors")}
        (folder / MANIFEST).write_text(json.dumps({"sha256": digests}, indent=2))
    return Path(out)


def search_weights(policy: ComposedPolicy, ckpt: Checkpoint, task: TaskConfig, episodes: int, step: float = 0.1
                   ) -> dict[str, Any]:
    """Evaluate every grid point on the evaluation seeds, on `task` with the leader checkpoint's evaluation
    settings; the best by (success rate, return) is chosen."""
    from robopol.evaluate import evaluate
    from robopol.sim.factory import EVAL_SEED_BASE

    cfg = ckpt.config
    cfg.policy.n_obs_steps = policy.n_obs_steps  # the environment keeps the longest window any parent needs
    scores = []
    with tqdm(weight_grid(len(policy.parents), step), desc="compose: weight search", unit="weight",
              dynamic_ncols=True) as bar:
        for w in bar:
            policy.weights.copy_(torch.tensor(w))
            scores.append({"weights": list(w), **evaluate(policy, task, cfg.policy, episodes)})
            bar.set_postfix(weights=",".join(f"{x:g}" for x in w), success=f"{scores[-1]['success_rate']:.3f}")
    best = max(scores, key=lambda s: (s["success_rate"], s["return_mean"]))
    return {"seeds": [EVAL_SEED_BASE, EVAL_SEED_BASE + episodes - 1], "episodes": episodes, "step": step,
            "chosen": best["weights"], "scores": scores}


def plot_search(search: dict[str, Any], path: Path) -> None:
    """Success rate of every evaluated weight vector (two parents: against the first parent's weight)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = search["scores"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(scores[0]["weights"]) == 2:
        ax.plot([s["weights"][0] for s in scores], [s["success_rate"] for s in scores], "o-")
        ax.set_xlabel("weight of parent 0 (parent 1: 1 - w)")
    else:
        ax.bar(range(len(scores)), [s["success_rate"] for s in scores])
        ax.set_xticks(range(len(scores)), [",".join(f"{w:g}" for w in s["weights"]) for s in scores], rotation=90, fontsize=5)
    ax.axvline(search["chosen"][0] if len(scores[0]["weights"]) == 2 else scores.index(
        next(s for s in scores if s["weights"] == search["chosen"])), color="k", ls=":", label="chosen")
    ax.set_ylabel(f"success rate ({search['episodes']} eval seeds)")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def compose_command(sources: Sequence[str], weights: Sequence[float] | None, out: str | Path,
                    search_episodes: int | None = None, step: float = 0.1) -> dict[str, Any]:
    """`robopol compose`: given weights, or (search_episodes) the grid search's choice."""
    if (weights is None) == (search_episodes is None):
        raise ConfigError("compose: give either --weights W1 W2 ... or --search-episodes N, not both or neither")
    start = weights if weights is not None else [1.0] + [0.0] * (len(sources) - 1)
    policy, ckpts, task = compose_policies(sources, start)
    result: dict[str, Any] = {"out": str(out), "parents": [str(c.path) for c in ckpts]}
    if search_episodes is not None:
        search = search_weights(policy, ckpts[0], task, search_episodes, step)
        weights = search["chosen"]
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        json_path, png_path = Path(f"{out}-search.json"), Path(f"{out}-search.png")
        with atomic_output(json_path) as tmp:
            tmp.write_text(json.dumps(search, indent=2))
        plot_search(search, png_path)
        result.update(search=str(json_path), plot=str(png_path))
    write_composed(ckpts, weights, out, task, policy.obs_dim)
    return {**result, "weights": list(weights)}
