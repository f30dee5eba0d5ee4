"""A loop's per-step function built ahead of time by AOTInductor: the compiled rollout step of a CPU
learner (policy.algo.compile).

Why not torch.compile: a rollout step of two small MLPs is ~50 µs of arithmetic, but a torch.compile'd
call wraps it in dynamo's frame evaluation and AOTAutograd's runtime wrappers: ~0.2 ms a call alone and
0.6-0.8 ms between EnvPool Hopper-v5 steps (cold caches), a fifth of a compiled EnvPool PPO iteration.
The same Inductor code in an AOTInductor package, called with a flat tensor list, takes ~65 µs alone
and ~0.35 ms between simulator steps.

How: `fn` is exported once with every floating-point parameter and buffer of `modules` as an input, so
the package holds no weights and each call reads the current ones (optimiser steps, checkpoint loads and
running statistics need no copying); integer buffers that select a branch in Python (GoRL's stage)
are built into the package, and a change of their values builds another. The package is cached under
Inductor's cache directory (TORCHINDUCTOR_CACHE_DIR), keyed by the exported program: a run that finds
it loads it in milliseconds, a first build takes ~20 s. Random draws are ATen's (fallback_random), so
the step samples what the eager step samples from the same seed."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

FlatRun = Callable[[list[torch.Tensor]], list[torch.Tensor]]
INDUCTOR_OPTIONS = {"fallback_random": True}


class _Bound(nn.Module):
    """`fn` as the forward of a module that holds `modules`, so torch.func.functional_call can hand it
    other tensors for their parameters and buffers."""

    def __init__(self, fn: Callable[..., Any], modules: nn.Module) -> None:
        super().__init__()
        self.fn, self.held = fn, modules

    def forward(self, *args: torch.Tensor) -> Any:
        return self.fn(*args)


class _Functional(nn.Module):
    """forward(tensors, *args): `fn(*args)` with the modules' parameters and buffers replaced by `tensors`
    (in `names` order): the form that is exported, weights as inputs rather than constants."""

    def __init__(self, bound: _Bound, names: list[str], record: Callable[[pytree.TreeSpec], None]) -> None:
        super().__init__()
        # `record` is told the output structure: export puts the module's own attributes back after tracing
        self.names, self.record = names, record
        self.bound = [bound]  # not a submodule: export would lift its weights as constants of the package

    def forward(self, tensors: tuple[torch.Tensor, ...], *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs as a flat tuple, their structure told to `record` (a package stores only flat
        outputs, so named tuples among them need no registration)."""
        out = torch.func.functional_call(self.bound[0], dict(zip(self.names, tensors)), args)
        leaves, spec = pytree.tree_flatten(out)
        self.record(spec)
        return tuple(leaves)


def package_path(program: torch.export.ExportedProgram) -> Path:
    """Where the package of `program` is cached: its key covers torch's version, the build options and the
    exported program (graph code, input shapes, dtypes and devices, signature and lifted constants), not
    the source locations that str(program) prints, so moving or editing code around it builds nothing."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    inputs = [(node.name, tuple(node.meta["val"].shape), node.meta["val"].dtype, node.meta["val"].device)
              for node in program.graph.nodes if node.op == "placeholder"]
    key = hashlib.sha256(f"{torch.__version__}|{sorted(INDUCTOR_OPTIONS.items())}|{program.graph_module.code}|"
                         f"{inputs}|{program.graph_signature}".encode())
    for name, constant in sorted(program.constants.items()):
        key.update(name.encode())
        if isinstance(constant, torch.Tensor):
            key.update(constant.detach().cpu().contiguous().numpy().tobytes())
    return Path(cache_dir()) / "robopol_aot" / f"{key.hexdigest()[:32]}.pt2"


def build_package(program: torch.export.ExportedProgram) -> FlatRun:
    """The program's package, built unless cached (atomically: concurrent ranks may build it at once), as
    a function of the flat input list."""
    path = package_path(program)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
        os.close(fd)
        try:
            torch._inductor.aoti_compile_and_package(program, package_path=tmp, inductor_configs=INDUCTOR_OPTIONS)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return torch._inductor.aoti_load_package(str(path)).loader.run


class AheadOfTimeStep:
    """`fn(*args)` (tensors in, a pytree of tensors out), reading the tensors of `modules`, as an
    AOTInductor package. `bind(*example)` returns the callable for the modules' current tensors; call it
    again where a module may have been given new tensor objects (the loop binds once a rollout). A new
    argument or tensor shape, dtype or device exports and builds again."""

    def __init__(self, fn: Callable[..., Any], modules: nn.Module) -> None:
        self.bound = _Bound(fn, modules)
        self.run: FlatRun | None = None
        self.out_spec: pytree.TreeSpec | None = None
        self.signature: list[tuple[Any, ...]] = []

    def bind(self, *example: torch.Tensor) -> Callable[..., Any]:
        state = {**dict(self.bound.named_parameters()), **dict(self.bound.named_buffers())}
        names = [name for name, t in state.items() if t.is_floating_point()]
        tensors = [state[name].detach() for name in names]
        # Integer buffers (GoRL's stage) choose a branch in Python: the package is specialised on their values.
        switches = [(name, t.tolist()) for name, t in state.items() if not t.is_floating_point()]
        signature = [*switches, *((name, tuple(t.shape), t.dtype, t.device) for name, t in zip(names, tensors)),
                     *((tuple(a.shape), a.dtype, a.device) for a in example)]
        if self.run is None or signature != self.signature:
            self._export(names, tensors, example)
            self.signature = signature
        run, spec = self.run, self.out_spec
        assert run is not None and spec is not None

        def call(*args: torch.Tensor) -> Any:
            return pytree.tree_unflatten(run([*tensors, *args]), spec)

        return call

    def _export(self, names: list[str], tensors: Sequence[torch.Tensor], example: Sequence[torch.Tensor]) -> None:
        # Exported outside inference mode (a rollout runs inside it) on plain copies of the inputs; export
        # traces with fake tensors, so no random number is drawn.
        with torch.inference_mode(False), torch.no_grad():
            inputs = (tuple(t.clone() for t in tensors), *(a.clone() for a in example))
            specs: list[pytree.TreeSpec] = []
            program = torch.export.export(_Functional(self.bound, names, specs.append), inputs, strict=False)
        self.out_spec = specs[-1]
        self.run = build_package(program)
