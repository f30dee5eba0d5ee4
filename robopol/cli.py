"""`robopol <command>`: train | pretrain | resume | eval | sweep | export | deploy | demos | compose | list.

`train` runs online algorithms, `pretrain` offline ones (behaviour cloning); both go through the one
Runner (robopol.runner), which drives the loop the algorithm declares.

User mistakes (RobopolError, and argparse's own) end with one line on stderr and exit code 2, never a
traceback. Anything else is a bug: one line naming it and the crash log that holds its traceback
(RUN/crash.log when a run folder was in use, else a temporary file), exit code 1."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from robopol import __version__
from robopol.config_search import GROUP_FOLDERS, add_user_dirs
from robopol.errors import RobopolError, write_crash_log


def _train(args: argparse.Namespace) -> dict:
    from robopol.algos.base import algorithm_class
    from robopol.config import load_run_config
    from robopol.errors import ConfigError
    from robopol.runner import train

    cfg = load_run_config(args.overrides)
    offline = algorithm_class(cfg.policy.algo.name).loop == "offline"
    if offline != (args.command == "pretrain"):
        other = "pretrain" if offline else "train"
        raise ConfigError(f"policy.algo.name={cfg.policy.algo.name} trains {'offline' if offline else 'online'}: "
                          f"run it with `robopol {other}`")
    run_dir, metrics = train(cfg)
    return {"run_dir": str(run_dir), **metrics}


def _resume(args: argparse.Namespace) -> dict:
    from robopol.runner import resume

    run_dir, metrics = resume(Path(args.run_dir), args.total_env_steps)
    return {"run_dir": str(run_dir), **metrics}


def _eval(args: argparse.Namespace) -> dict:
    """Protocol metrics on fixed seeds, written with a rollout video to --out (default: RUN/eval, or
    RUN/eval/step_N for one checkpoint folder of a run: never into a checkpoint), so a reported number
    has its file and its video."""
    from robopol.checkpoint import load_checkpoint, load_policy
    from robopol.data.atomic import atomic_output
    from robopol.eval_settings import with_eval_settings
    from robopol.evaluate import evaluate, record_video
    from robopol.preflight import check_memory, check_writable, env_memory
    from robopol.sim.factory import EVAL_SEED_BASE

    ckpt = with_eval_settings(load_checkpoint(args.checkpoint), args.overrides)
    cfg = ckpt.config
    episodes = args.episodes or cfg.train.eval_episodes
    out = Path(args.out) if args.out else _default_eval_dir(Path(args.checkpoint), ckpt.path)
    check_writable(out, "--out")
    check_memory([env_memory(cfg.task, episodes, "--episodes")])
    policy = load_policy(ckpt)
    result = {"checkpoint": str(ckpt.path), "task": cfg.task.name, "env_steps": ckpt.env_steps,
              "seeds": [EVAL_SEED_BASE, EVAL_SEED_BASE + episodes - 1],
              **evaluate(policy, cfg.task, cfg.policy, episodes)}
    video = None if args.no_video else record_video(policy, cfg.task, cfg.policy, out / "rollout.mp4")
    result["video"] = str(video) if video else None
    with atomic_output(out / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


def _sweep(args: argparse.Namespace) -> dict:
    """Success (and PushT score) against the guidance weight, written to --out (default RUN/eval/sweep)."""
    from robopol.checkpoint import load_checkpoint
    from robopol.eval_settings import sweep, with_eval_settings
    from robopol.preflight import check_memory, check_writable, env_memory

    ckpt = with_eval_settings(load_checkpoint(args.checkpoint), args.overrides)
    out = Path(args.out) if args.out else _default_eval_dir(Path(args.checkpoint), ckpt.path) / "sweep"
    check_writable(out, "--out")
    check_memory([env_memory(ckpt.config.task, args.episodes, "--episodes")])
    from robopol.sim.factory import EVAL_SEED_BASE

    seed_base = EVAL_SEED_BASE if args.seed_base is None else args.seed_base
    result = sweep(ckpt, args.weights, args.best_of_n, args.episodes, seed_base, out)
    return {"sweep": str(out / "sweep.json"), "plot": str(out / "sweep.png"),
            "success_rate": {f"w={r['guidance_weight']:g},N={r['best_of_n']}": r["success_rate"] for r in result["rows"]}}


def _default_eval_dir(given: Path, checkpoint: Path) -> Path:
    if checkpoint.parent.name != "checkpoints":  # a checkpoint folder outside any run
        return checkpoint.with_name(f"{checkpoint.name}-eval")
    run = checkpoint.parent.parent
    return run / "eval" if given.resolve() == run.resolve() else run / "eval" / checkpoint.name


def _export(args: argparse.Namespace) -> dict:
    from robopol.export import export_checkpoint

    return export_checkpoint(args.checkpoint, args.out_dir, formats=tuple(args.formats), settings=args.overrides)


def _hardware_config(overrides: list[str]) -> dict:
    """hardware=NAME (hardware/NAME.yaml) or hardware=PATH.yaml selects the file; hardware.key=value
    overrides its keys (hardware.sim=null hardware.robot.port=N turns a simulated robot's file into a real one's)."""
    from omegaconf import OmegaConf

    from robopol.errors import ConfigError
    from robopol.hardware.config import find_hardware_file

    name, rest = "sim_inverted_pendulum", []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if key == "hardware":
            name = value
        elif key.startswith("hardware."):
            rest.append(f"{key.removeprefix('hardware.')}={value}")
        else:
            raise ConfigError(f"unknown deploy override {key!r}; use hardware=NAME|PATH or hardware.<key>=<value>")
    merged = OmegaConf.merge(OmegaConf.load(find_hardware_file(name)), OmegaConf.from_dotlist(rest))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def _deploy(args: argparse.Namespace) -> dict:
    """The summary is the JSON line on every ending of the loop; a run the loop had to stop prints it
    before its one-line error."""
    from robopol.hardware.deploy import run_deploy
    from robopol.hardware.loop import DeployAborted
    from robopol.preflight import check_writable

    check_writable(args.log, "--log", directory=False)  # before the robot is connected
    cycles = args.cycles or None
    duration = args.duration or (None if cycles else 10.0)
    try:
        return run_deploy(_hardware_config(args.overrides), args.checkpoint, cycles=cycles, duration_s=duration,
                          log_path=args.log)
    except DeployAborted as exc:
        print(json.dumps(exc.summary, default=str))
        raise


def _compose(args: argparse.Namespace) -> dict:
    from robopol.compose import compose_command

    return compose_command(args.checkpoints, args.weights, args.out, args.search_episodes)


def _demos(args: argparse.Namespace) -> dict:
    from robopol.demos import parse_mix, write_demonstrations
    from robopol.errors import ConfigError

    if args.mix and (args.n is not None or args.noise is not None):
        raise ConfigError("--mix: gives every part's noise and count; drop --n and --noise")
    return write_demonstrations(args.task, args.n or 50, Path(args.out), noise=args.noise or 0.0, seed=args.seed,
                                fmt=args.format, mix=parse_mix(args.mix) if args.mix else None)


def _list(args: argparse.Namespace) -> None:
    """Each option of the config groups with the file it selects, and the files that file shadows."""
    from robopol.config_search import candidates

    groups = {group: candidates(group) for group, folder in GROUP_FOLDERS.items() if args.group in (None, folder)}
    width = max(len(name) for options in groups.values() for name in options) if any(groups.values()) else 0
    for group, options in groups.items():
        print(f"{GROUP_FOLDERS[group]}:")
        for name, (path, *shadowed) in options.items():
            print(f"  {name:<{width}}  {path}" + "".join(f"  (shadows {other})" for other in shadowed))
        if group == "task":
            print(f"  {'<Gymnasium id>':<{width}}  any registered env with Box actions, e.g. task=Ant-v5")


class _Parser(argparse.ArgumentParser):
    """argparse's own mistakes (an unknown option, a value out of range) as one `error:` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _number(kind: type[int | float], ge: float | None = None, gt: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite int / float, checked against its range (ge: >=, gt: >)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value) or (ge is not None and value < ge) or (gt is not None and value <= gt):
            bound = f">= {ge}" if ge is not None else f"> {gt}"
            raise argparse.ArgumentTypeError(f"{text} is out of range; must be {'an integer' if kind is int else 'a finite number'} "
                                             f"{bound}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robopol", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"robopol {__version__}")
    parser.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                        help="a folder holding your own tasks/ policies/ sim/ hardware/, searched before the "
                             "working directory and robopol's own (repeatable; also $ROBOPOL_CONFIG_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a policy: robopol train task=hopper policy=fpo key=value ...")
    p.add_argument("overrides", nargs="*", help="task=NAME policy=NAME sim=NAME and dotted key=value overrides")
    p.set_defaults(run=_train)
    p = sub.add_parser("pretrain", help="behaviour cloning: robopol pretrain task=lift policy=bc_diffusion "
                                        "policy.algo.dataset=demos/lift.hdf5")
    p.add_argument("overrides", nargs="*", help="task=NAME policy=NAME and dotted key=value overrides")
    p.set_defaults(run=_train)
    p = sub.add_parser("resume", help="continue a killed or finished run from its newest checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--total-env-steps", type=_number(int, ge=1), default=None, help="extend the run's budget to this many env steps")
    p.set_defaults(run=_resume)
    p = sub.add_parser("eval", help="evaluate a checkpoint alone; the last line is JSON")
    p.add_argument("checkpoint", help="run folder or checkpoint folder")
    p.add_argument("overrides", nargs="*", help="evaluation-time settings, right after the checkpoint: e.g. "
                                                "policy.algo.guidance_weight=0.02 policy.algo.best_of_n=8 "
                                                "policy.eval_noise=random (QGF checkpoints)")
    p.add_argument("--episodes", type=_number(int, ge=1), default=None, help="default: the run's train.eval_episodes")
    p.add_argument("--out", default="", help="folder for result.json and rollout.mp4 (default: RUN/eval, or "
                                             "RUN/eval/step_N for a checkpoint folder)")
    p.add_argument("--no-video", action="store_true", help="skip the rollout video")
    p.set_defaults(run=_eval)
    p = sub.add_parser("sweep", help="QGF: evaluate a checkpoint over guidance weights; JSON + plot of success vs w")
    p.add_argument("checkpoint", help="run folder or checkpoint folder of a QGF run")
    p.add_argument("overrides", nargs="*", help="other evaluation-time settings, right after the checkpoint, e.g. "
                                                "policy.eval_noise=random")
    p.add_argument("--weights", nargs="+", type=_number(float, gt=0), required=True,
                   help="guidance weights besides w = 0, e.g. 0.004 0.008 0.01 0.02 0.04 0.06 0.08 0.1 0.12")
    p.add_argument("--best-of-n", nargs="+", type=_number(int, ge=1), default=[1], help="best-of-N settings (default 1)")
    p.add_argument("--episodes", type=_number(int, ge=1), default=20, help="episodes per point")
    p.add_argument("--seed-base", type=_number(int, ge=0), default=None,
                   help="first evaluation seed (default: the task's evaluation seeds)")
    p.add_argument("--out", default="", help="folder for sweep.json and sweep.png (default: RUN/eval/sweep)")
    p.set_defaults(run=_sweep)
    p = sub.add_parser("export", help="checkpoint -> ONNX + TorchScript (parity-checked) with a JSON spec")
    p.add_argument("checkpoint")
    p.add_argument("out_dir")
    p.add_argument("overrides", nargs="*", help="evaluation-time settings the exported sampler uses, e.g. "
                                                "policy.algo.guidance_weight=0.02 (QGF checkpoints)")
    p.add_argument("--formats", nargs="+", default=["onnx", "torchscript"], choices=["onnx", "torchscript"])
    p.set_defaults(run=_export)
    p = sub.add_parser("deploy", help="drive a robot (or the simulated one) in the real-time loop")
    p.add_argument("checkpoint", help="run folder, checkpoint folder or export folder")
    p.add_argument("overrides", nargs="*", help="hardware=NAME (hardware/NAME.yaml on the search path) or "
                                                 "hardware=PATH.yaml, and hardware.<key>=<value>")
    p.add_argument("--cycles", type=_number(int, ge=1), default=None, help="stop after this many control cycles")
    p.add_argument("--duration", type=_number(float, gt=0), default=None, help="stop after this many seconds (default 10)")
    p.add_argument("--log", default="deploy_log.csv", help="per-cycle timings")
    p.set_defaults(run=_deploy)
    p = sub.add_parser("demos", help="write scripted-expert demonstrations (robomimic HDF5 or PushT zarr)")
    p.add_argument("task", help="pusht | lift | can | square")
    p.add_argument("--n", type=_number(int, ge=1), default=None, help="number of episodes (default 50)")
    p.add_argument("--out", required=True, help="output file (.hdf5, .h5: robomimic HDF5) or store (.zarr: PushT zarr)")
    p.add_argument("--noise", type=_number(float, ge=0), default=None,
                   help="expert action noise (PushT: pixels; robomimic: action units; default 0)")
    p.add_argument("--mix", default="", help="mixed-quality HDF5: NOISE:COUNT (expert at that noise) or random:COUNT "
                                            "(uniform actions) parts, e.g. 0.15:20,1.0:10,random:10")
    p.add_argument("--seed", type=_number(int, ge=0), default=0)
    p.add_argument("--format", default=None, choices=["hdf5", "zarr"], help="default: from the --out extension, "
                                                                          "which it must agree with")
    p.set_defaults(run=_demos)
    p = sub.add_parser("compose", help="GPC: mix pretrained diffusion / flow policies at every sampling step into "
                                       "one checkpoint: robopol compose CKPT_A CKPT_B --weights 0.6 0.4 --out DIR")
    p.add_argument("checkpoints", nargs="+", help="parent run or checkpoint folders (the first one's sampler runs)")
    p.add_argument("--weights", nargs="+", type=_number(float, ge=0), default=None,
                   help="convex weights, one per checkpoint")
    p.add_argument("--search-episodes", type=_number(int, ge=1), default=None,
                   help="instead of --weights: choose them on a 0.1 grid by this many rollouts per point on the "
                        "evaluation seeds (scores in OUT-search.json and OUT-search.png)")
    p.add_argument("--out", required=True, help="the composed checkpoint folder to write")
    p.set_defaults(run=_compose)
    p = sub.add_parser("list", help="the tasks, policies, sim settings and hardware available, and where each file is")
    p.add_argument("group", nargs="?", choices=list(GROUP_FOLDERS.values()),
                   help="one group (default: all)")
    p.set_defaults(run=_list)
    return parser


def _quiet_third_party() -> None:
    """robopol's own messages at INFO, other libraries' only from WARNING, and robosuite's start-up
    notices (macro file, optional robots and IK, controller files) only from ERROR, so that a user's
    error line is not buried under them."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("robopol").setLevel(logging.INFO)
    logging.getLogger("robosuite_logs").addFilter(_errors_only)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """A warning as one `warning:` line, the shape of the error lines, not Python's two-line format."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "osmesa")  # headless machines have OSMesa, not EGL
    _quiet_third_party()
    warnings.filterwarnings("default")
    warnings.formatwarning = _one_line_warning
    args = build_parser().parse_args(argv)
    add_user_dirs(args.config_dir)
    try:
        result = args.run(args)
    except RobopolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (a bug, not a user mistake: one line here, the traceback in a file)
        crash_log = getattr(exc, "crash_log", None) or write_crash_log(exc)
        gist = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: robopol {args.command} failed unexpectedly ({type(exc).__name__}: {gist}); "
              f"full traceback in {crash_log}", file=sys.stderr)
        return 1
    if result is not None:
        from robopol.distributed import is_main  # torch is loaded by now: every command with a result uses it

        if is_main():  # of torchrun's ranks, the main one reports
            print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
