"""train.device=cuda: networks, optimiser state and updates on the GPU, envs on the CPU; a checkpoint
written from the GPU loads and evaluates on the CPU. Runs only where torch sees a CUDA GPU."""

import pytest
import torch

from robopol.checkpoint import load_checkpoint, load_policy
from robopol.config import load_run_config
from robopol.runner import Runner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch (CPU-only build "
                                                                      "or machine); the GPU paths are untested here")


@pytest.mark.parametrize("policy", ["ppo", "dppo", "sac"])
def test_a_few_updates_on_the_gpu_and_a_checkpoint_that_loads_on_the_cpu(policy, tmp_path):
    cfg = load_run_config(["task=reach", f"policy={policy}", "train.device=cuda", "train.total_env_steps=512",
                           "train.rollout_steps=32", "train.eval_every=0", "train.eval_episodes=1", "train.video=false",
                           "train.progress=false", "policy.algo.learning_starts=64" if policy == "sac" else "sim.num_envs=8"])
    runner = Runner(cfg, tmp_path)
    assert all(p.device.type == "cuda" for m in runner.algo.modules().values() for p in m.parameters())
    assert runner.normalizer.obs_mean.device.type == "cuda"
    before = [p.detach().clone() for p in runner.algo.actor.parameters()]
    runner.run()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, runner.algo.actor.parameters()))
    for optimizer in runner.algo.optimizers().values():
        assert all(t.device.type == "cuda" for s in optimizer.state.values() for t in s.values()
                   if isinstance(t, torch.Tensor) and t.dim() > 0)
    bundle = load_policy(load_checkpoint(tmp_path))
    assert all(p.device.type == "cpu" for p in bundle.parameters())
    obs = torch.zeros(1, bundle.n_obs_steps, bundle.obs_dim)
    assert bundle(obs, torch.zeros(bundle.noise_shape(1))).isfinite().all()
