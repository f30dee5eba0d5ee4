"""Rollout GAE against hand-worked examples (bootstrapping truncation, not termination)."""

import pytest
import torch

from robopol.data.normalizer import RewardScaler
from robopol.data.rollout import RolloutBuffer


def test_gae_hand_worked_with_truncation_and_termination():
    """One env, gamma=0.5, lambda=0.5, values all 1, rewards all 1, over 4 steps:
    step 1 is truncated with V(final obs)=2 (bootstrapped), step 3 terminates (not bootstrapped).

    rewards after bootstrap: r = [1, 1 + 0.5*2 = 2, 1, 1]; episode ends after steps 1 and 3.
    deltas: d3 = 1 - 1 = 0 (terminal); d2 = 1 + 0.5*1 - 1 = 0.5; d1 = 2 - 1 = 1 (episode end);
            d0 = 1 + 0.5*1 - 1 = 0.5
    advantages: A3 = 0; A2 = 0.5 + 0.25*A3 = 0.5; A1 = 1; A0 = 0.5 + 0.25*1 = 0.75"""
    buf = RolloutBuffer(4, 1, (1, 2), (1, 1))
    ends = [(False, False), (False, True), (False, False), (True, False)]
    for terminated, truncated in ends:
        buf.add(torch.zeros(1, 1, 2), torch.zeros(1, 1, 1), torch.ones(1), torch.tensor([terminated]),
                torch.tensor([truncated]), values=torch.ones(1))
        if truncated:
            buf.bootstrap(torch.tensor([0]), torch.full((1,), 2.0))
    buf.compute_gae(last_values=torch.full((1,), 7.0), gamma=0.5, gae_lambda=0.5)
    torch.testing.assert_close(buf.advantages[:, 0], torch.tensor([0.75, 1.0, 0.5, 0.0]))
    torch.testing.assert_close(buf.returns[:, 0], torch.tensor([1.75, 2.0, 1.5, 1.0]))


def test_gae_bootstraps_from_last_values_when_the_rollout_cuts_an_episode():
    buf = RolloutBuffer(2, 1, (1, 1), (1, 1))
    for _ in range(2):
        buf.add(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.zeros(1), torch.tensor([False]), torch.tensor([False]),
                values=torch.zeros(1))
    buf.compute_gae(torch.full((1,), 10.0), gamma=0.9, gae_lambda=1.0)
    torch.testing.assert_close(buf.advantages[:, 0], torch.tensor([8.1, 9.0]))


def test_gae_does_not_bootstrap_a_step_that_is_both_terminated_and_truncated():
    buf = RolloutBuffer(1, 1, (1, 1), (1, 1))
    buf.add(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.ones(1), torch.tensor([True]), torch.tensor([True]),
            values=torch.zeros(1))
    buf.bootstrap(torch.tensor([0]), torch.full((1,), 100.0))
    buf.compute_gae(torch.full((1,), 100.0), gamma=0.9, gae_lambda=0.95)
    torch.testing.assert_close(buf.advantages[:, 0], torch.tensor([1.0]))


def test_minibatches_cover_every_sample_once_with_extras():
    buf = RolloutBuffer(3, 2, (1, 1), (1, 1), extras={"log_prob": ()})
    for t in range(3):
        buf.add(torch.full((2, 1, 1), float(t)), torch.zeros(2, 1, 1), torch.zeros(2), torch.zeros(2, dtype=torch.bool),
                torch.zeros(2, dtype=torch.bool), torch.zeros(2), log_prob=torch.tensor([t, 10.0 + t]))
    buf.compute_gae(torch.zeros(2), gamma=0.9, gae_lambda=0.95)
    seen = torch.cat([group["log_prob"].flatten() for group in buf.minibatch_groups(4)])
    assert sorted(seen.tolist()) == [0, 1, 2, 10, 11, 12]
    with pytest.raises(RuntimeError):
        buf.add(*([torch.zeros(2, 1, 1)] * 2), torch.zeros(2), *([torch.zeros(2, dtype=torch.bool)] * 2),
                torch.zeros(2), log_prob=torch.zeros(2))


def test_rewards_are_scaled_before_the_truncation_bootstrap_is_added():
    """The critic learns scaled returns, so V(final obs) joins the reward after scaling: 0.5 * 1 + 0.5 * 2."""
    buf = RolloutBuffer(1, 1, (1, 1), (1, 1))
    buf.add(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.ones(1), torch.tensor([False]), torch.tensor([True]),
            values=torch.zeros(1))
    buf.bootstrap(torch.tensor([0]), torch.full((1,), 2.0))
    buf.compute_gae(torch.zeros(1), gamma=0.5, gae_lambda=1.0, scale_rewards=lambda r, ended: r * 0.5)
    torch.testing.assert_close(buf.rewards[:, 0], torch.tensor([1.5]))


def test_reward_scaler_over_a_rollout_equals_step_by_step_calls():
    rewards = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ended = torch.zeros(6, 3, dtype=torch.bool)
    ended[2, 1] = ended[4, 0] = True
    by_step, by_rollout = RewardScaler(3, 0.9), RewardScaler(3, 0.9)
    expected = torch.stack([torch.from_numpy(by_step(r.numpy(), e.numpy())) for r, e in zip(rewards, ended)])
    assert torch.equal(by_rollout.scale_rollout(rewards, ended), expected)
    assert (by_rollout.var, by_rollout.count) == (by_step.var, by_step.count)
    assert (by_rollout.returns == by_step.returns).all()


def test_minibatch_groups_stack_consecutive_minibatches_and_keep_a_partial_one_alone():
    """10 samples in minibatches of 3, two at a time: one group of 2, one of the remaining whole one, then
    the last sample alone; together the shuffled samples once each, in the order of one plain epoch."""
    buf = RolloutBuffer(5, 2, (1, 1), (1, 1))
    for t in range(5):
        buf.add(torch.tensor([2.0 * t, 2.0 * t + 1])[:, None, None], torch.zeros(2, 1, 1), torch.zeros(2),
                torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool), torch.zeros(2))
    buf.compute_gae(torch.zeros(2), gamma=0.9, gae_lambda=0.95)
    groups = list(buf.minibatch_groups(3, group=2, generator=torch.Generator().manual_seed(0)))
    assert [tuple(g["obs"].shape) for g in groups] == [(2, 3, 1, 1), (1, 3, 1, 1), (1, 1, 1, 1)]
    plain = list(buf.minibatch_groups(3, generator=torch.Generator().manual_seed(0)))
    assert [tuple(g["obs"].shape) for g in plain] == [(1, 3, 1, 1)] * 3 + [(1, 1, 1, 1)]
    order = torch.cat([g["obs"].flatten() for g in groups])
    assert torch.equal(order, torch.cat([g["obs"].flatten() for g in plain]))
    assert sorted(order.tolist()) == list(range(10))
