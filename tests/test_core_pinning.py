"""sim.cpu: the learner thread and EnvPool's workers pinned to one core (robopol.core_pinning), a bad
core refused with the field and the allowed values, and the caller's cores given back afterwards."""

import os
from pathlib import Path

import pytest

from robopol.config import load_run_config
from robopol.core_pinning import learner_core, pinned_learner
from robopol.errors import ConfigError

CORES = sorted(os.sched_getaffinity(0))


def thread_cores() -> list[str]:
    """Each thread of this process's allowed cores, as the kernel lists them."""
    out = []
    for task in Path("/proc/self/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out.append(line.split()[1])
    return out


def test_no_pinning_by_default():
    assert load_run_config(["task=point_mass", "policy=ppo"]).sim.cpu == -1
    assert learner_core(-1) is None


def test_a_core_the_process_lacks_is_refused_with_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"sim.cpu: 4096 is not one of this process's cores; allowed: "
                                          + ", ".join(map(str, CORES))):
        learner_core(4096)
    with pytest.raises(ConfigError, match="sim.cpu"):
        load_run_config(["task=point_mass", "policy=ppo", "sim.cpu=-2"])


def test_a_pinned_run_trains_on_one_thread():
    with pytest.raises(ConfigError, match=r"train.threads: 2 with sim.cpu: 0.*allowed 1"):
        load_run_config(["task=point_mass", "policy=ppo", "sim.cpu=0", "train.threads=2"])


def test_the_learner_is_pinned_within_and_given_its_cores_back_after():
    core = CORES[-1]
    before = os.sched_getaffinity(0)
    with pinned_learner(core) as pinned:
        assert pinned == core and os.sched_getaffinity(0) == {core}
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(len(CORES) < 2, reason="needs two cores to tell a pinned thread from an unpinned one")
def test_envpool_workers_run_on_the_learners_core():
    pytest.importorskip("envpool")
    from robopol.sim.envpool_env import EnvPoolVectorEnv

    core = CORES[-1]
    before = set(thread_cores())
    envs = EnvPoolVectorEnv("Hopper-v5", {}, num_envs=2, threads=1, core=core)
    try:
        assert str(core) in thread_cores() and str(core) not in before  # the worker, on that core alone
        envs.reset(seed=0)  # a reseeded pool is rebuilt on the same core
        assert str(core) in thread_cores()
    finally:
        envs.close()
