"""The Runner: one owner for envs, normaliser, seeding, evaluation, logging and checkpoint/resume.

It builds the actor from the policy config, hands it to the algorithm (which builds its own critics),
and drives the loop the algorithm declares (robopol.loops: on_policy, off_policy or offline):

    while progress < budget:  loop.iterate() -> log -> evaluate every eval_every -> checkpoint
        every checkpoint_every iterations

Progress counts env steps for the online loops and gradient steps for the offline one.

The Runner owns the learner's device (train.device, robopol.device) and, when torchrun started several
processes, this rank's part (robopol.distributed): every rank steps its own seeded envs and holds the
same networks; rank 0 alone logs, evaluates and writes the run folder."""

from __future__ import annotations

import copy
import json
import random
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robopol import distributed
from robopol.algos.base import algorithm_class
from robopol.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from robopol.config import RunConfig
from robopol.core_pinning import pinned_learner
from robopol.data.normalizer import Normalizer
from robopol.device import cpu_side, on_device, resolve_device
from robopol.errors import CheckpointError, ConfigError
from robopol.evaluate import evaluate, record_video
from robopol.loops import make_loop
from robopol.policies.base import Actor, ChunkSpec
from robopol.policies.bundle import PolicyBundle
from robopol.preflight import check_run_folder, preflight_run
from robopol.run_lock import RunLock
from robopol.run_logger import RunLogger
from robopol.sim.factory import env_spec
from robopol.typed_config import to_dict

RANK_SEED_STRIDE = 1_000_003  # rank r > 0 draws from seed + r * stride: its own noise and env episodes


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.task.name.replace('/', '_')}-{cfg.policy.name}-{stamp}"


class Runner:
    def __init__(self, cfg: RunConfig, run_dir: Path, resume: Checkpoint | None = None) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        obs_dim, act_dim, low, high = env_spec(cfg.task)  # an unusable task fails before anything is written
        algo_class = algorithm_class(cfg.policy.algo.name)
        self.device, self.main = resolve_device(cfg.train.device), distributed.is_main()
        torch.set_num_threads(cfg.train.threads)
        _seed(cfg.train.seed)

        pol = cfg.policy
        self.spec = ChunkSpec(obs_dim, act_dim, pol.n_obs_steps, pol.horizon, pol.n_action_steps)
        with on_device(self.device):
            self.normalizer = Normalizer(obs_dim, low, high, cfg.sim.obs_clip())
            actor = pol.actor.build(self.spec)
            if cfg.train.pretrained:
                self._load_pretrained(actor, cfg.train.pretrained)
            self.algo = algo_class(pol, actor)
            self.loop = make_loop(self)
        distributed.broadcast_modules({**self.algo.modules(), "normalizer": self.normalizer})
        if distributed.rank():
            _seed(cfg.train.seed + RANK_SEED_STRIDE * distributed.rank())
        self.logger: RunLogger | None = None  # rank 0's alone
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)  # only now: a pretrained start or a dataset that fails writes nothing
            (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
            self.logger = RunLogger(run_dir)
        self.env_steps, self.progress, self.iteration, self.wall_time = 0, 0, 0, 0.0
        self.started = time.perf_counter()
        with on_device(self.device):
            if resume is not None:
                self._restore(resume)
            self.loop.start()

    # ---- the outer loop a reader follows top to bottom ----
    def run(self) -> dict[str, float]:
        cfg, loop = self.cfg.train, self.loop
        bar = tqdm(total=loop.budget, initial=self.progress, unit=loop.unit, unit_scale=True, dynamic_ncols=True,
                   disable=not (cfg.progress and self.main), desc=f"{self.cfg.policy.name} on {self.cfg.task.name}")
        result: dict[str, float] = {}
        self.started = time.perf_counter() - self.wall_time
        try:
            if cfg.pretrained and self.progress == 0 and self.main:
                self.evaluate()  # the starting point a fine-tuning curve is measured from
            while self.progress < loop.budget:
                start = time.perf_counter()
                with on_device(self.device):
                    advanced, metrics = loop.iterate(self.progress / loop.budget)
                if loop.progress_per_rank:  # every rank stepped its own envs: the run advanced by their sum
                    total = distributed.sum_over_ranks(advanced)
                    self.env_steps += total - advanced
                    advanced = total
                self.progress += advanced
                self.iteration += 1
                bar.update(advanced)
                metrics[f"{loop.unit.replace(' ', '_')}s_per_second"] = advanced / (time.perf_counter() - start)
                metrics["wall_time"] = self.wall_time = time.perf_counter() - self.started
                if "episode_return" in metrics:
                    metrics["episode_return"] = metrics.pop("episode_return")  # last column, as it always was
                    bar.set_postfix(ret=f"{metrics['episode_return']:.1f}")
                elif "loss" in metrics:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                if metrics and self.logger:
                    self.logger.log(loop.stream, self.progress, metrics)
                finished = self.progress >= loop.budget
                evaluates = finished or (loop.evaluates_in_run and cfg.eval_every and self.iteration % cfg.eval_every == 0)
                if evaluates and self.main:
                    result = self.evaluate()
                if finished or self.iteration % cfg.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            loop.close()
        if not self.main:
            return {}
        if not result:  # resumed a run that had already finished
            result = self.evaluate()
        if cfg.video:
            with cpu_side(self.device):
                record_video(self.policy(), self.cfg.task, self.cfg.policy, self.run_dir / "eval.mp4")
        self.logger.plot(f"{self.cfg.policy.name} on {self.cfg.task.name}")
        loop.plot(self.logger)
        self.logger.close()
        return {**loop.summary(), **result}

    def precision(self) -> torch.autocast:
        """The context every update runs in: bf16 matrix products under train.autocast=bf16, else fp32.
        Without autocast's weight cache: an update takes optimiser steps inside this one context, and a
        cached bf16 copy would keep feeding later forwards the weights from before those steps."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.train.autocast == "bf16",
                              cache_enabled=False)

    def policy(self) -> PolicyBundle:
        """What evaluation sees: eval-mode copies of the algorithm's actors with the normaliser; the
        training actors keep their mode. Always on the CPU, where evaluation, export and deployment run."""
        actors, normalizer = self.algo.policy_actors(), self.normalizer
        if self.device.type != "cpu":
            actors = {name: copy.deepcopy(actor).cpu() for name, actor in actors.items()}
            normalizer = copy.deepcopy(normalizer).cpu()
        with cpu_side(self.device):
            return PolicyBundle.of(actors, normalizer, self.cfg.policy)

    def evaluate(self) -> dict[str, float]:
        assert self.logger is not None, "rank 0 alone evaluates"
        with cpu_side(self.device):
            metrics = evaluate(self.policy(), self.cfg.task, self.cfg.policy, self.cfg.train.eval_episodes)
        metrics["wall_time"] = time.perf_counter() - self.started
        self.logger.log("eval", self.env_steps, metrics)
        self.logger.plot(f"{self.cfg.policy.name} on {self.cfg.task.name}")
        return metrics

    # ---- pretrained start, checkpoint and resume ----
    def _load_pretrained(self, actor: Actor, path: str) -> None:
        """Fine-tuning starts from a (behaviour-cloned) checkpoint's actor weights and normaliser."""
        ckpt = load_checkpoint(path)
        mine, theirs = self.spec, ckpt.spec
        if mine != theirs:
            raise CheckpointError(f"train.pretrained: {ckpt.path} was trained for {theirs}, but this run needs {mine}")
        if ckpt.config.policy.actor.type != self.cfg.policy.actor.type:
            raise CheckpointError(f"train.pretrained: {ckpt.path} holds a {ckpt.config.policy.actor.type} actor; "
                                  f"policy.actor.type is {self.cfg.policy.actor.type}")
        ckpt.load_into("actor", actor, "train.pretrained")
        ckpt.load_into("normalizer", self.normalizer, "train.pretrained")
        actor.prepare_finetuning()

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint, holding every rank's envs, replay and RNG; the others return None."""
        ranks = distributed.gather_to_main({"loop": self.loop.state_dict(), "rng": _rng_state(self.device)})
        if ranks is None:
            return None
        state: dict[str, Any] = {
            "env_steps": self.env_steps, "progress": self.progress, "iteration": self.iteration,
            "wall_time": self.wall_time, "algo": self.algo.state_dict(), "loop": ranks[0]["loop"],
            "optimizers": {k: o.state_dict() for k, o in self.algo.optimizers().items()},
            "rng": ranks[0]["rng"],
        }
        if len(ranks) > 1:
            state["world_size"], state["ranks"] = len(ranks), ranks[1:]
        modules = {**self.algo.modules(), "normalizer": self.normalizer}
        return save_checkpoint(self.run_dir, self.cfg, self.spec, self.env_steps, modules, state, step=self.progress)

    def _restore(self, ckpt: Checkpoint) -> None:
        """Every rank its own part of the checkpoint; only the world size that wrote it can resume it."""
        state = ckpt.trainer_state()
        saved, world, rank = int(state.get("world_size", 1)), distributed.world_size(), distributed.rank()
        if saved != world:
            raise ConfigError(f"resume: {self.run_dir} was trained by {saved} process(es) and this resume runs {world}; "
                              f"resume it with the same number (torchrun --nproc_per_node {saved} ... or plain "
                              "`robopol resume` for 1)")
        mine = state if rank == 0 else state["ranks"][rank - 1]
        for name, module in {**self.algo.modules(), "normalizer": self.normalizer}.items():
            ckpt.load_into(name, module, "resume")
        for name, optimizer in self.algo.optimizers().items():
            try:
                optimizer.load_state_dict(state["optimizers"][name])
            except (KeyError, ValueError) as exc:  # a missing optimiser, or parameter groups of another shape
                raise CheckpointError(f"resume: {ckpt.path} holds no optimiser state for this robopol's "
                                      f"{self.cfg.policy.algo.name} optimiser '{name}' ({exc}); an earlier robopol "
                                      "wrote it. Its policy still evaluates, exports and deploys; to train on, "
                                      f"start a run from it with train.pretrained={self.run_dir}") from None
        self.algo.load_state_dict(state["algo"])
        self.loop.load_state_dict(mine["loop"])
        self.env_steps, self.iteration = int(state["env_steps"]), int(state["iteration"])
        self.progress = int(state["progress"])
        self.wall_time = float(state["wall_time"])
        _set_rng_state(mine["rng"], self.device)
        if self.logger:
            self.logger.truncate_after(self.progress, (self.loop.stream,))
            self.logger.truncate_after(self.env_steps, ("eval",))


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict[str, Any]:
    _, key, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)}}
    if device.type == "cuda":  # a GPU learner draws its noise from the GPU's generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(rng: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    random.setstate((3, tuple(rng["python"]), None))
    np_rng = rng["numpy"]
    np.random.set_state(("MT19937", np_rng["key"].numpy().astype(np.uint32), np_rng["pos"], np_rng["has_gauss"],
                         np_rng["cached_gaussian"]))


def _main_lock(run_dir: Path) -> RunLock | nullcontext[None]:
    """Rank 0 holds the run folder; the other ranks of its run write nothing there."""
    return RunLock(run_dir) if distributed.is_main() else nullcontext()


def train(cfg: RunConfig, run_dir: Path | None = None) -> tuple[Path, dict[str, float]]:
    algorithm_class(cfg.policy.algo.name)  # fails at once, before any file is written
    with distributed.session(resolve_device(cfg.train.device), cfg.train.dist_timeout_s):
        run_dir = Path(distributed.from_main(str(run_dir or cfg.train.run_dir or default_run_dir(cfg))))
        if distributed.is_main():
            preflight_run(cfg, run_dir)
        with _main_lock(run_dir):
            if (run_dir / "checkpoints" / "LATEST").exists():
                raise ConfigError(f"train.run_dir: {run_dir} already holds a run; continue it with `robopol resume "
                                  f"{run_dir}` or choose another train.run_dir")
            if distributed.is_main():
                for stale in ("train.csv", "eval.csv", "offline.csv"):
                    (run_dir / stale).unlink(missing_ok=True)
            with pinned_learner(cfg.sim.cpu):
                return run_dir, Runner(cfg, run_dir).run()


def resume(run_dir: Path, total_env_steps: int | None = None) -> tuple[Path, dict[str, float]]:
    """Continue a run from its newest checkpoint: weights, optimisers, normaliser, replay, counters and
    RNG. `total_env_steps` extends (or sets) an online run's budget; an annealed learning rate follows."""
    check_run_folder(run_dir)
    with _main_lock(run_dir):
        ckpt = load_checkpoint(run_dir)
        with distributed.session(resolve_device(ckpt.config.train.device), ckpt.config.train.dist_timeout_s):
            return _resume(ckpt, Path(run_dir), total_env_steps)


def _resume(ckpt: Checkpoint, run_dir: Path, total_env_steps: int | None) -> tuple[Path, dict[str, float]]:
    if total_env_steps is not None:
        if algorithm_class(ckpt.config.policy.algo.name).loop == "offline":
            raise ConfigError(f"--total-env-steps: {run_dir} trained offline ({ckpt.config.policy.algo.name}), a "
                              "budget of gradient steps (policy.algo.num_steps), not env steps; nothing to extend")
        if total_env_steps <= ckpt.env_steps:
            raise ConfigError(f"train.total_env_steps: {total_env_steps} is not beyond the {ckpt.env_steps} env steps "
                              f"{run_dir} has already run; give a larger budget")
        ckpt.config.train.total_env_steps = total_env_steps
    if distributed.is_main():
        preflight_run(ckpt.config, run_dir)
    with pinned_learner(ckpt.config.sim.cpu):
        return run_dir, Runner(ckpt.config, run_dir, resume=ckpt).run()
