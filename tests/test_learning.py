"""Each algorithm raises mean evaluation return clearly on the seeded Reach task within a small budget.

Random Reach policies score about -30 (30 steps at ~1 unit from the goal); reaching and stopping
scores better than -10. The threshold asks for a gain of 8, several times the seed-to-seed spread."""

import pytest

from robopol.config import load_run_config
from robopol.runner import Runner

BUDGETS = {"ppo": 16_000, "fpo": 32_000, "dppo": 16_000}  # FPO's clip of 0.05 moves more slowly


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["ppo", "fpo", "dppo"])
def test_return_rises_on_reach(policy, tmp_path):
    cfg = load_run_config(["task=reach", f"policy={policy}", f"train.total_env_steps={BUDGETS[policy]}",
                           "train.rollout_steps=64", "train.eval_every=0", "train.eval_episodes=16",
                           "train.progress=false", "train.video=false", "train.seed=3"])
    trainer = Runner(cfg, tmp_path)
    before = trainer.evaluate()["return_mean"]
    after = trainer.run()["return_mean"]
    print(f"{policy}: evaluation return {before:.1f} -> {after:.1f}")
    assert after > before + 8, f"{policy}: evaluation return {before:.1f} -> {after:.1f}"
