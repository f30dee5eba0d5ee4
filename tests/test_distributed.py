"""Multi-process training on gloo, 2 processes on this machine: the all-reduced gradient step keeps ranks
identical and equals one process on the union of their data; merged normaliser and reward statistics
equal the one-process statistics of the same observations, and between merges each rank folds in only
its own; a bad train.device is one error line."""

import os
import socket
import threading

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from robopol import distributed, shared_memory_sum
from robopol.algos.compiled_step import CompiledStep
from robopol.data.normalizer import Normalizer, RewardScaler
from robopol.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    (net(x) - y).pow(2).mean().backward()
    opt.step()


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 8, 3, generator=g), torch.randn(5, 8, 1, generator=g), torch.randn(40, 2, 4, generator=g) * 3 + 1


def _rewards() -> np.ndarray:
    return np.random.default_rng(2).normal(1.0, 2.0, size=(5, 8))


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    with distributed.session(torch.device("cpu"), timeout_s=30):
        xs, ys, obs = _data()
        net = _net()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        snapshots = []
        for x, y in zip(xs, ys):  # rank r steps on its half of each batch of 8
            _step(net, opt, x[rank * 4:(rank + 1) * 4], y[rank * 4:(rank + 1) * 4])
            flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
            gathered = [torch.empty_like(flat) for _ in range(2)]
            dist.all_gather(gathered, flat)
            snapshots.append(torch.stack(gathered))
        compiled = _compiled_steps(rank, xs, ys)
        norm = Normalizer(4, np.full(2, -1.0), np.full(2, 1.0))
        scaler = RewardScaler(4, gamma=0.9)
        stats = []
        for i, batch in enumerate(obs.split(8)):  # each rank folds in its own half of every batch
            norm.update(batch[rank * 4:(rank + 1) * 4])
            scaler(_rewards()[i, rank * 4:(rank + 1) * 4], np.zeros(4, dtype=bool))
            if i in (1, 4):  # merged twice, after the 2nd and the last batch
                stats.append({"own_mean": norm.obs_mean.clone(), "own_count": float(norm.count)})
                norm.merge_ranks()
                scaler.merge_ranks()
        shared_memory = distributed._local_sum is not None
        kl = distributed.mean_over_ranks(torch.tensor(1.0 + rank))  # ranks decide an early stop on the same value
        env_steps = distributed.sum_over_ranks(2**40 + 3 + rank)  # past float32's integers
        if rank == 0:
            torch.save({"compiled": compiled, "kl": kl, "env_steps": env_steps, "shared_memory": shared_memory, "snapshots": snapshots, "params": [p.detach() for p in net.parameters()],
                        "mean": norm.obs_mean, "var": norm.obs_var, "count": norm.count, "stats": stats,
                        "reward": (scaler.mean, scaler.var, scaler.count)}, out)


def _compiled_steps(rank: int, xs: torch.Tensor, ys: torch.Tensor) -> list[torch.Tensor]:
    """The same steps through policy.algo.compile's CompiledStep (aot_eager: no C++ build), whose gradient
    average is a graph break inside the compiled step; both ranks' weights after each step."""
    compile = torch.compile
    torch.compile = lambda fn, **options: compile(fn, backend="aot_eager")
    try:
        net = _net()
        opt = torch.optim.Adam([{"params": list(net[0].parameters())}, {"params": list(net[2].parameters())}], lr=1e-2)

        def loss(batch: dict[str, torch.Tensor], train_actor: bool):
            value = (net(batch["x"]) - batch["y"]).pow(2).mean()
            return value, value, {}

        step = CompiledStep({"net": net}, loss, opt, max_grad_norm=1e9)  # no clip, as _step
        snapshots = []
        for x, y in zip(xs, ys):
            step.begin()
            step.steps({"x": x[None, rank * 4:(rank + 1) * 4], "y": y[None, rank * 4:(rank + 1) * 4]}, True)
            step.end()
            flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
            gathered = [torch.empty_like(flat) for _ in range(2)]
            dist.all_gather(gathered, flat)
            snapshots.append(torch.stack(gathered))
        return snapshots
    finally:
        torch.compile = compile


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist") / "rank0.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    return torch.load(out)


def test_parameters_are_identical_on_every_rank_after_every_update(two_ranks):
    assert two_ranks["shared_memory"] == shared_memory_sum.supported()  # both ranks on this host: no TCP round trips
    for step, both in enumerate(two_ranks["snapshots"]):
        assert torch.equal(both[0], both[1]), f"ranks differ after update {step + 1}"


def test_the_compiled_step_averages_gradients_over_ranks_as_the_eager_step_does(two_ranks):
    for step, (compiled, eager) in enumerate(zip(two_ranks["compiled"], two_ranks["snapshots"])):
        assert torch.equal(compiled[0], compiled[1]), f"ranks differ after compiled update {step + 1}"
        torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-6)


def test_two_ranks_of_four_match_one_process_of_eight(two_ranks):
    xs, ys, _ = _data()
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for x, y in zip(xs, ys):  # the mean loss over 8 = the mean of the two halves' mean losses
        _step(net, opt, x, y)
    for mine, theirs in zip(net.parameters(), two_ranks["params"]):
        torch.testing.assert_close(mine.detach(), theirs, rtol=1e-5, atol=1e-6)


def test_merged_normaliser_equals_one_process_statistics(two_ranks):
    _, _, obs = _data()
    one = Normalizer(4, np.full(2, -1.0), np.full(2, 1.0))
    for batch in obs.split(8):
        one.update(batch)
    flat = obs.reshape(-1, 4).double()
    torch.testing.assert_close(two_ranks["mean"], one.obs_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(two_ranks["var"], one.obs_var, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(two_ranks["mean"].double(), flat.mean(0), rtol=1e-5, atol=1e-5)
    assert float(two_ranks["count"]) == pytest.approx(80, abs=1e-6)


def test_between_merges_a_rank_folds_in_only_its_own_observations(two_ranks):
    """No collective per step: before the first merge rank 0 holds its own half's statistics; before the
    second, the first merge's union plus its own half of the next three batches."""
    _, _, obs = _data()
    own = obs.split(8)
    first, second = two_ranks["stats"]
    assert first["own_count"] == pytest.approx(16, abs=1e-6)
    torch.testing.assert_close(first["own_mean"].double(), torch.cat([b[:4] for b in own[:2]]).reshape(-1, 4).double().mean(0),
                               rtol=1e-5, atol=1e-5)
    assert second["own_count"] == pytest.approx(32 + 24, abs=1e-6)
    seen = torch.cat([*own[:2], *(b[:4] for b in own[2:])]).reshape(-1, 4).double()
    torch.testing.assert_close(second["own_mean"].double(), seen.mean(0), rtol=1e-5, atol=1e-5)


def test_the_early_stop_kl_is_the_mean_over_ranks(two_ranks):
    assert float(two_ranks["kl"]) == 1.5  # rank 0's own value is 1.0, rank 1's 2.0


def test_env_steps_are_summed_over_ranks_exactly(two_ranks):
    assert two_ranks["env_steps"] == 2**41 + 7


def test_shared_memory_mean_replaces_each_tensor_in_place_with_its_mean_over_ranks():
    """Three ranks (threads here) with tensors of mixed shapes: each tensor object now holds the mean, the
    same bits on every rank, call after call (both phases of the slots reused)."""
    if not shared_memory_sum.supported():
        pytest.skip("shared-memory sums are x86-64 only")
    world, barrier = 3, threading.Barrier(3)
    values = [[torch.randn(4, 3, generator=torch.Generator().manual_seed(10 * r + c)) for c in range(3)] for r in range(world)]
    calls = [[[torch.full((2,), float(r + k)), v[k].clone(), v[k][:1, 0].clone()] for k in range(3)] for r, v in
             enumerate(values)]  # three calls per rank, each a list of three tensors
    results: dict[int, list[list[torch.Tensor]]] = {}

    def rank(r: int) -> None:
        summer = shared_memory_sum.SharedMemorySum(f"robopol-test-{os.getpid()}", r, world, barrier.wait, timeout_s=30)
        for tensors in calls[r]:
            ids = [id(t) for t in tensors]
            summer.mean_(tensors)
            assert [id(t) for t in tensors] == ids
        results[r] = calls[r]

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1, 2]
    for k in range(3):
        torch.testing.assert_close(results[0][k][0], torch.full((2,), 1.0 + k))  # (0 + 1 + 2) / 3 + k
        torch.testing.assert_close(results[0][k][1], sum(v[k] for v in values) / 3)
        torch.testing.assert_close(results[0][k][2], sum(v[k][:1, 0] for v in values) / 3)
        for r in (1, 2):
            assert all(torch.equal(a, b) for a, b in zip(results[0][k], results[r][k]))


def test_merged_reward_scaler_equals_one_process_statistics(two_ranks):
    one = RewardScaler(8, gamma=0.9)
    for row in _rewards():
        one(row, np.zeros(8, dtype=bool))
    mean, var, count = two_ranks["reward"]
    assert count == pytest.approx(one.count)
    assert mean == pytest.approx(one.mean, rel=1e-9)
    assert var == pytest.approx(one.var, rel=1e-9)


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "CPU", "cuda0"])
def test_a_bad_device_is_one_error_naming_key_value_and_choices(value):
    from robopol.config import load_run_config

    with pytest.raises(ConfigError, match=rf"train.device: '{value}' is not allowed; choose auto, cpu, cuda or cuda:N"):
        load_run_config(["task=reach", f"train.device={value}"])


def test_cuda_without_a_gpu_is_refused_in_one_line():
    from robopol.device import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError, match="train.device: 'cuda', but torch .* sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
