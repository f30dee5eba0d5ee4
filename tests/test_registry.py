"""Algorithms and actors register themselves: one defined here, with one YAML in the user's folder,
trains through the CLI with no edit to robopol; duplicate names are refused."""

import csv
import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from robopol import registry
from robopol.algos.on_policy import OnPolicyAlgorithm, OnPolicyConfig, approx_kl
from robopol.cli import main
from robopol.config import ActorConfig, AlgoConfig


@dataclass
class VPGConfig(OnPolicyConfig):
    actor_types: ClassVar[tuple[str, ...]] = ("gaussian",)
    name: str = "test_vpg"


class VPG(OnPolicyAlgorithm):
    """Vanilla policy gradient: -log pi(a|s) A, one epoch."""

    config_class = VPGConfig

    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        return {"log_prob": ()}

    def act(self, obs):
        noise = torch.randn(self.actor.noise_shape(obs.shape[0]))
        return self.actor.sample(obs, noise), {"log_prob": self.actor.noise_log_prob(noise)}

    def policy_loss(self, batch, adv):
        log_prob = self.actor.log_prob(batch["obs"], batch["actions"])
        return {"loss": -(log_prob * adv).mean(), "approx_kl": approx_kl(log_prob - batch["log_prob"]),
                "clip_fraction": torch.zeros(())}


VPG_YAML = """# @package _global_
policy:
  name: test_vpg
  actor: {type: gaussian, hidden: [32], activation: tanh}
  algo: {name: test_vpg, lr: 1.0e-3, update_epochs: 1, minibatch_size: 64}
"""


def test_an_algorithm_defined_outside_robopol_registers_and_trains_through_the_cli(tmp_path, monkeypatch, capsys):
    assert registry.lookup("algorithm")["test_vpg"] is VPG and AlgoConfig.variants()["test_vpg"] is VPGConfig
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "test_vpg.yaml").write_text(VPG_YAML)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    code = main(["train", "task=reach", "policy=test_vpg", "train.total_env_steps=512", "train.rollout_steps=32",
                 "sim.num_envs=4", "train.eval_episodes=2", "train.video=false", "train.progress=false",
                 f"train.run_dir={run}"])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(run / "train.csv")))
    assert len(rows) == 4 and all(float(r["policy_loss"]) == float(r["policy_loss"]) for r in rows)
    assert json.loads((run / "config.json").read_text())["policy"]["algo"]["name"] == "test_vpg"
    assert main(["eval", str(run), "--episodes", "2", "--no-video"]) == 0


def test_actor_configs_build_their_actors_by_type():
    from robopol.policies.base import ChunkSpec
    from robopol.policies.flow import FlowActor

    spec = ChunkSpec(3, 2, 1, 4, 2)
    actor = ActorConfig.variants()["flow"](hidden=[8], flow_steps=3).build(spec)
    assert isinstance(actor, FlowActor) and actor.num_sampling_steps == 3
    assert {"gaussian", "flow", "diffusion", "tanh_gaussian"} <= set(ActorConfig.variants())


def test_a_second_class_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="algo config 'ppo' is registered twice"):
        @dataclass
        class Impostor(AlgoConfig):
            name: str = "ppo"
