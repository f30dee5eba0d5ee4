"""`robopol <command>`: train | resume | eval (and the commands later issues add).

User mistakes (RobopolError) end with one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from robopol.errors import RobopolError


def _train(args: argparse.Namespace) -> dict:
    from robopol.config import load_run_config
    from robopol.train import train

    run_dir, metrics = train(load_run_config(args.overrides))
    return {"run_dir": str(run_dir), **metrics}


def _resume(args: argparse.Namespace) -> dict:
    from robopol.train import resume

    run_dir, metrics = resume(Path(args.run_dir))
    return {"run_dir": str(run_dir), **metrics}


def _eval(args: argparse.Namespace) -> dict:
    from robopol.checkpoint import load_checkpoint, load_policy
    from robopol.evaluate import evaluate, record_video

    ckpt = load_checkpoint(args.checkpoint)
    policy = load_policy(ckpt.path)
    cfg = ckpt.config
    metrics = evaluate(policy, cfg.task, cfg.policy, args.episodes or cfg.train.eval_episodes)
    if args.video:
        video = record_video(policy, cfg.task, cfg.policy, Path(args.video))
        metrics["video"] = str(video) if video else None
    return {"checkpoint": str(ckpt.path), "task": cfg.task.name, "env_steps": ckpt.env_steps, **metrics}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robopol", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a policy: robopol train task=hopper policy=fpo key=value ...")
    p.add_argument("overrides", nargs="*", help="task=NAME policy=NAME sim=NAME and dotted key=value overrides")
    p.set_defaults(run=_train)
    p = sub.add_parser("resume", help="continue a killed or finished run from its newest checkpoint")
    p.add_argument("run_dir")
    p.set_defaults(run=_resume)
    p = sub.add_parser("eval", help="evaluate a checkpoint alone; the last line is JSON")
    p.add_argument("checkpoint", help="run folder or checkpoint folder")
    p.add_argument("--episodes", type=int, default=0, help="default: the run's train.eval_episodes")
    p.add_argument("--video", default="", help="write a rollout video (MP4) here")
    p.set_defaults(run=_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")  # headless machines have OSMesa, not EGL
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("default")
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except RobopolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
