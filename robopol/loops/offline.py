"""Offline loop (behaviour cloning; QGF's BC actor + IQL critic): batches from a demonstration dataset ->
algo.update(batch), with no environment stepping until the final evaluation. What it asks of the
algorithm is robopol.algos.base.OfflineAlgorithm.

Flow: read + validate the dataset for the task -> fit the normaliser on the training demos (a
resumed run keeps the checkpoint's) -> windows (observation history, action chunk) -> one iteration
is a block of gradient steps; the validation loss on the file's held-out demos is logged every
`val_every` steps; the policy is evaluated with the task's protocol at the end.

Windows stay on the CPU and each batch crosses to the learner's device. Under torchrun every rank
draws its batches from its own share of the windows (a distributed sampler: rank r of W the windows
r, r + W, r + 2W, ...), so the ranks' batches, whose gradients are averaged, are disjoint draws."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robopol import distributed
from robopol.algos.base import OfflineAlgorithm
from robopol.data.chunk_returns import ChunkReturns, chunk_returns, final_frames
from robopol.data.datasets import check_dimensions, load_demonstrations
from robopol.data.episodes import Demonstrations, Episode
from robopol.data.normalizer import Normalizer
from robopol.data.windows import Windows, make_windows
from robopol.device import to_learner
from robopol.loops.base import Loop, RunState
from robopol.policies.base import ChunkSpec
from robopol.run_logger import RunLogger

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


def shard_indices(size: int, batch_size: int, rank: int, world: int) -> torch.Tensor:
    """`batch_size` random windows (on the CPU, with replacement) from rank `rank`'s share of `size`:
    those congruent to rank modulo world; all of them in a single process."""
    share = len(range(rank, size, world))
    return rank + world * torch.randint(share, (batch_size,), device="cpu")


def normalised_windows(episodes: list[Episode], normalizer: Normalizer, spec: ChunkSpec) -> Windows:
    obs = [normalizer.normalize_obs(torch.as_tensor(ep.flat_obs)).cpu().numpy() for ep in episodes]
    actions = [normalizer.normalize_action(torch.as_tensor(ep.actions)).cpu().numpy() for ep in episodes]
    return make_windows(obs, actions, spec.n_obs_steps, spec.horizon)


def normalised_chunk_returns(episodes: list[Episode], normalizer: Normalizer, spec: ChunkSpec,
                             algo: OfflineAlgorithm, gamma: float) -> ChunkReturns:
    frames = [normalizer.normalize_obs(torch.as_tensor(final_frames(ep))).cpu().numpy() for ep in episodes]
    actions = [normalizer.normalize_action(torch.as_tensor(ep.actions)).cpu().numpy() for ep in episodes]
    rewards = [algo.step_rewards(ep) for ep in episodes]
    return chunk_returns(episodes, frames, actions, rewards, spec.n_obs_steps, spec.horizon, spec.n_action_steps, gamma)


class OfflineLoop(Loop):
    stream = "offline"
    unit = "grad step"
    evaluates_in_run = False  # the validation loss is the in-run signal; rollouts come at the end

    def __init__(self, runner: RunState) -> None:
        super().__init__(runner)
        assert isinstance(runner.algo, OfflineAlgorithm), "the offline loop drives OfflineAlgorithm subclasses"
        self.algo: OfflineAlgorithm = runner.algo
        cfg, algo = runner.cfg, runner.algo.cfg
        dataset = algo.dataset
        self.demos = load_demonstrations(dataset, cfg.task, drop_bad=algo.drop_bad_episodes)
        check_dimensions(self.demos, dataset, cfg.task, runner.spec.obs_dim, runner.spec.act_dim)
        self.train_eps, self.valid_eps = split_episodes(self.demos)
        self.num_steps, self.batch_size, self.val_every = algo.num_steps, algo.batch_size, algo.val_every
        self.block = max(1, self.num_steps // LOSS_POINTS)

    @property
    def budget(self) -> int:
        return self.num_steps

    def start(self) -> None:
        runner = self.runner
        # A resumed run keeps the statistics it trained with, and a run from train.pretrained the ones its
        # loaded weights were trained with (refitting them to new data would shift every input under them).
        if runner.progress == 0 and not runner.cfg.train.pretrained:
            actions = torch.as_tensor(np.concatenate([ep.actions for ep in self.train_eps]))
            runner.normalizer.fit(torch.as_tensor(np.concatenate([ep.flat_obs for ep in self.train_eps])),
                                  actions if self.algo.cfg.action_bounds == "data" else None)
        self.data = normalised_windows(self.train_eps, runner.normalizer, runner.spec)
        gamma = self.algo.return_discount
        self.returns = (None if gamma is None else
                        normalised_chunk_returns(self.train_eps, runner.normalizer, runner.spec, self.algo, gamma))
        self.valid = normalised_windows(self.valid_eps, runner.normalizer, runner.spec) if self.valid_eps else None

    def iterate(self, progress: float) -> tuple[int, dict[str, float]]:
        runner, algo = self.runner, self.algo
        steps = min(self.block, self.num_steps - runner.progress)
        losses = []
        for _ in range(steps):
            index = shard_indices(len(self.data), self.batch_size, distributed.rank(), distributed.world_size())
            if self.returns is None:
                obs, actions = self.data.batch(index)
                batch = {"obs": obs, "actions": actions}
            else:  # the same windows, in the same order, with their chunk returns
                batch = self.returns.batch(index)
            batch = {key: to_learner(value, runner.device) for key, value in batch.items()}
            with runner.precision():
                out = algo.update(batch, progress)
            losses.append(out["loss"])
        metrics = {**out, "loss": float(np.mean(losses))}  # the block's mean loss, the last step's schedule
        done = runner.progress + steps
        if self.valid is not None and self.val_every and (done // self.val_every > runner.progress // self.val_every
                                                          or done == self.num_steps):
            valid = (t.to(runner.device) for t in self.valid.batch(torch.arange(len(self.valid), device="cpu")))
            metrics["val_loss"] = algo.validation_loss(*valid)  # type: ignore[attr-defined]
        return steps, metrics

    def plot(self, logger: RunLogger) -> None:
        cfg = self.runner.cfg
        logger.plot_metrics(self.stream, ("loss", "val_loss"), f"{cfg.policy.algo.name} ({cfg.policy.actor.type}) on "
                            f"{cfg.task.name}", "offline_loss.png", xlabel="gradient step", log_y=True)

    def summary(self) -> dict[str, Any]:
        assert self.runner.logger is not None, "rank 0 alone summarises"
        rows = self.runner.logger.read(self.stream)
        out: dict[str, Any] = {"demos": len(self.demos.episodes), "train_windows": len(self.data),
                               "gradient_steps": self.runner.progress}
        if rows:
            out["loss"] = float(rows[-1]["loss"])
            val = [r["val_loss"] for r in rows if r.get("val_loss")]
            if val:
                out["val_loss"] = float(val[-1])
        return out
