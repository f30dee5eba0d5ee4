"""`robopol pretrain`: behaviour cloning from demonstrations into a checkpoint that `robopol eval`,
`train.pretrained=...`, export and deploy all read like any other.

Flow: read + validate the dataset for the task -> fit the normaliser on the training demos ->
windows (obs history, action chunk) -> BC steps -> evaluate the EMA actor with the task's protocol
on the fixed evaluation seeds -> checkpoint {actor: EMA weights, normalizer} at env_steps 0."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robopol.algos.bc import BC, BCConfig
from robopol.checkpoint import save_checkpoint
from robopol.config import RunConfig
from robopol.data.datasets import check_dimensions, load_demonstrations
from robopol.data.episodes import Demonstrations, Episode
from robopol.data.normalizer import Normalizer
from robopol.data.windows import Windows, make_windows
from robopol.errors import ConfigError
from robopol.evaluate import evaluate, record_video
from robopol.policies.base import ChunkSpec
from robopol.policies.factory import make_actor
from robopol.policies.inference import InferencePolicy
from robopol.run_logger import RunLogger
from robopol.sim.factory import env_spec
from robopol.train import default_run_dir
from robopol.typed_config import to_dict

LOSS_POINTS = 200  # rows of the loss curve, whatever num_steps is


def split_episodes(demos: Demonstrations) -> tuple[list[Episode], list[Episode]]:
    """(train, valid) by the file's mask/valid names; all episodes train when the file has no masks
    covering every demo (diffusion_policy zarr stores have none)."""
    names = sorted(demos.train_names + demos.valid_names, key=lambda n: int(n.rsplit("_", 1)[-1]))
    if len(names) != len(demos.episodes) or not demos.valid_names or not demos.train_names:
        return list(demos.episodes), []
    valid = set(demos.valid_names)
    return ([ep for n, ep in zip(names, demos.episodes) if n not in valid],
            [ep for n, ep in zip(names, demos.episodes) if n in valid])


def normalised_windows(episodes: list[Episode], normalizer: Normalizer, spec: ChunkSpec) -> Windows:
    obs = [normalizer.normalize_obs(torch.as_tensor(ep.flat_obs)).numpy() for ep in episodes]
    actions = [normalizer.normalize_action(torch.as_tensor(ep.actions)).numpy() for ep in episodes]
    return make_windows(obs, actions, spec.n_obs_steps, spec.horizon)


def pretrain(cfg: RunConfig, run_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
    algo = cfg.policy.algo
    if not isinstance(algo, BCConfig):
        raise ConfigError(f"policy.algo.name: pretrain runs behaviour cloning (bc), got {algo.name!r}; "
                          "choose policy=bc_diffusion or policy=bc_flow")
    run_dir = Path(run_dir or cfg.train.run_dir or default_run_dir(cfg))
    torch.set_num_threads(cfg.train.threads)
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)

    demos = load_demonstrations(algo.dataset, cfg.task)
    obs_dim, act_dim, low, high = env_spec(cfg.task)
    check_dimensions(demos, algo.dataset, cfg.task, obs_dim, act_dim)
    pol = cfg.policy
    spec = ChunkSpec(obs_dim, act_dim, pol.n_obs_steps, pol.horizon, pol.n_action_steps)
    train_eps, valid_eps = split_episodes(demos)
    normalizer = Normalizer(obs_dim, low, high, cfg.sim.clip_obs)
    normalizer.fit(torch.as_tensor(np.concatenate([ep.flat_obs for ep in train_eps])),
                   torch.as_tensor(np.concatenate([ep.actions for ep in train_eps])))
    data = normalised_windows(train_eps, normalizer, spec)
    valid = normalised_windows(valid_eps, normalizer, spec) if valid_eps else None

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    (run_dir / "bc.csv").unlink(missing_ok=True)
    bc = BC(algo, make_actor(spec, pol.actor))
    logger = RunLogger(run_dir)
    started = time.perf_counter()
    log_every = max(1, algo.num_steps // LOSS_POINTS)
    losses: list[float] = []
    bar = tqdm(range(1, algo.num_steps + 1), unit="step", dynamic_ncols=True, disable=not cfg.train.progress,
               desc=f"bc {pol.actor.type} on {cfg.task.name}")
    for step in bar:
        losses.append(bc.update(*data.batch(torch.randint(len(data), (algo.batch_size,)))))
        metrics: dict[str, float] = {}
        if step % log_every == 0 or step == algo.num_steps:
            metrics = {"loss": float(np.mean(losses)), "lr": bc.lr}
            losses.clear()
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        if valid is not None and algo.val_every and (step % algo.val_every == 0 or step == algo.num_steps):
            metrics["val_loss"] = bc.validation_loss(*valid.batch(torch.arange(len(valid))))
        if metrics:
            logger.log("bc", step, {**metrics, "wall_time": time.perf_counter() - started})
    bar.close()
    train_time = time.perf_counter() - started

    policy = InferencePolicy(bc.ema.average, normalizer).eval()
    result: dict[str, Any] = {"demos": len(demos.episodes), "train_windows": len(data), "bc_steps": algo.num_steps,
                              "train_time": train_time, **_last_losses(logger)}
    result.update(evaluate(policy, cfg.task, pol, cfg.train.eval_episodes))
    logger.log("eval", 0, {k: v for k, v in result.items() if isinstance(v, (int, float))})
    save_checkpoint(run_dir, cfg, spec, env_steps=0, modules={"actor": bc.ema.average, "normalizer": normalizer},
                    trainer_state={"bc_steps": algo.num_steps, "train_time": train_time})
    logger.plot_metrics("bc", ("loss", "val_loss"), f"BC ({pol.actor.type}) on {cfg.task.name}", "bc_loss.png",
                        xlabel="gradient step", log_y=True)
    logger.close()
    if cfg.train.video:
        record_video(policy, cfg.task, pol, run_dir / "eval.mp4")
    result["wall_time"] = time.perf_counter() - started
    return run_dir, result


def _last_losses(logger: RunLogger) -> dict[str, float]:
    rows = logger.read("bc")
    out = {"loss": float(rows[-1]["loss"])}
    val = [r["val_loss"] for r in rows if r.get("val_loss")]
    if val:
        out["val_loss"] = float(val[-1])
    return out
