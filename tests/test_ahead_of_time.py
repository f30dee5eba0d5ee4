"""robopol.loops.ahead_of_time: a function of a module's tensors built into an AOTInductor package (a real
C++ build; the compiler comes from scripts/setup.sh). It must compute and sample what the eager function
does from the same seed, read the current weights at every call (in-place updates, replaced parameters,
its running statistics), build another package when an integer switch changes branch, and load a package
it built before instead of building it again."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robopol.loops import ahead_of_time
from robopol.loops.ahead_of_time import AheadOfTimeStep


class Noisy(nn.Module):
    """A linear map plus Gaussian noise scaled by a running count; branch 1 adds tanh (an integer switch)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("count", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("branch", torch.zeros((), dtype=torch.int64))

    def step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.linear(x) + torch.randn(x.shape[0], 2) / self.count.float()
        if int(self.branch) == 1:
            y = torch.tanh(y)
        return {"y": y, "count": self.count + x.shape[0]}


@pytest.fixture
def counts(monkeypatch):
    """How many packages were asked for (built or loaded) and how many were built, so far."""
    count = {"packages": 0, "builds": 0}
    build_package, compile_and_package = ahead_of_time.build_package, torch._inductor.aoti_compile_and_package

    def package(program):
        count["packages"] += 1
        return build_package(program)

    def build(*args, **kwargs):
        count["builds"] += 1
        return compile_and_package(*args, **kwargs)

    monkeypatch.setattr(ahead_of_time, "build_package", package)
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", build)
    return count


def test_the_package_samples_and_updates_as_the_eager_function(counts):
    torch.manual_seed(0)
    module, x = Noisy(), torch.randn(4, 3)
    step = AheadOfTimeStep(module.step, module)
    with torch.inference_mode():
        call = step.bind(x)

        def same(seed: int) -> None:
            torch.manual_seed(seed)
            built = call(x)
            torch.manual_seed(seed)
            eager = module.step(x)
            assert built.keys() == eager.keys()
            for key in eager:
                torch.testing.assert_close(built[key], eager[key], rtol=1e-6, atol=1e-6, msg=key)

        same(1)
        with torch.no_grad():  # an optimiser's step and a running statistic: written in place
            module.linear.weight.add_(1.0)
            module.count.fill_(7.0)
        same(2)
        module.linear.bias = nn.Parameter(torch.full((2,), 5.0))  # a new tensor object: bind again
        call = step.bind(x)
        same(3)
        assert counts["packages"] == 1  # the same program throughout
        module.branch.fill_(1)  # the other branch: another program
        call = step.bind(x)
        same(4)
    assert counts["packages"] == 2
    built = counts["builds"]  # 0 to 2: a package an earlier run built is loaded from the cache

    again = AheadOfTimeStep(module.step, module)  # a new run of the same function: loaded, not built
    with torch.inference_mode():
        torch.manual_seed(5)
        y = again.bind(x)(x)["y"]
    assert counts["packages"] == 3 and counts["builds"] == built
    torch.manual_seed(5)
    torch.testing.assert_close(y, module.step(x)["y"])


def test_packages_are_cached_under_inductors_cache_directory_by_program(monkeypatch, tmp_path):
    """Programs that differ in a constant or an input shape get their own keys; the key is stable for one
    program, wherever its source lines are (a moved checkout or an edit elsewhere builds nothing)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    def program(scale: float, size: int = 2) -> torch.export.ExportedProgram:
        class Scale(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x * scale

        return torch.export.export(Scale(), (torch.ones(size),))

    def the_same_program_on_other_lines(scale: float) -> torch.export.ExportedProgram:
        class Scale(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x * scale

        return torch.export.export(Scale(), (torch.ones(2),))

    paths = [ahead_of_time.package_path(p) for p in (program(2.0), program(2.0), the_same_program_on_other_lines(2.0),
                                                     program(3.0), program(2.0, size=3))]
    assert paths[0] == paths[1] == paths[2]
    assert len({paths[0], paths[3], paths[4]}) == 3
    assert paths[0].parent == tmp_path / "robopol_aot"
