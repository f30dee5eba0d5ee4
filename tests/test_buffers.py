"""Rollout GAE against a hand-worked example; replay n-step returns with termination and truncation."""

import pytest
import torch

from robopol.data.replay import ReplayBuffer
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
                torch.tensor([truncated]), values=torch.ones(1), final_values=torch.full((1,), 2.0), gamma=0.5)
    buf.compute_gae(last_values=torch.full((1,), 7.0), gamma=0.5, gae_lambda=0.5)
    torch.testing.assert_close(buf.advantages[:, 0], torch.tensor([0.75, 1.0, 0.5, 0.0]))
    torch.testing.assert_close(buf.returns[:, 0], torch.tensor([1.75, 2.0, 1.5, 1.0]))


def test_gae_bootstraps_from_last_values_when_the_rollout_cuts_an_episode():
    buf = RolloutBuffer(2, 1, (1, 1), (1, 1))
    for _ in range(2):
        buf.add(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.zeros(1), torch.tensor([False]), torch.tensor([False]),
                values=torch.zeros(1), final_values=torch.zeros(1), gamma=0.9)
    buf.compute_gae(torch.full((1,), 10.0), gamma=0.9, gae_lambda=1.0)
    torch.testing.assert_close(buf.advantages[:, 0], torch.tensor([8.1, 9.0]))


def test_gae_does_not_bootstrap_a_step_that_is_both_terminated_and_truncated():
    buf = RolloutBuffer(1, 1, (1, 1), (1, 1))
    buf.add(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.ones(1), torch.tensor([True]), torch.tensor([True]),
            values=torch.zeros(1), final_values=torch.full((1,), 100.0), gamma=0.9)
    buf.compute_gae(torch.full((1,), 100.0), gamma=0.9, gae_lambda=0.95)
    torch.testing.assert_close(buf.advantages[:, 0], torch.tensor([1.0]))


def test_minibatches_cover_every_sample_once_with_extras():
    buf = RolloutBuffer(3, 2, (1, 1), (1, 1), extras={"log_prob": ()})
    for t in range(3):
        buf.add(torch.full((2, 1, 1), float(t)), torch.zeros(2, 1, 1), torch.zeros(2), torch.zeros(2, dtype=torch.bool),
                torch.zeros(2, dtype=torch.bool), torch.zeros(2), torch.zeros(2), 0.9, log_prob=torch.tensor([t, 10.0 + t]))
    seen = torch.cat([mb["log_prob"] for mb in buf.minibatches(4)])
    assert sorted(seen.tolist()) == [0, 1, 2, 10, 11, 12]
    with pytest.raises(RuntimeError):
        buf.add(*([torch.zeros(2, 1, 1)] * 2), torch.zeros(2), *([torch.zeros(2, dtype=torch.bool)] * 2),
                torch.zeros(2), torch.zeros(2), 0.9, log_prob=torch.zeros(2))


def _fill(buf: ReplayBuffer, rewards, terminated, truncated):
    for i, (r, te, tr) in enumerate(zip(rewards, terminated, truncated)):
        buf.add(torch.full((1, 1), float(i)), torch.zeros(1, 1, 1), torch.tensor([r]), torch.full((1, 1), float(i) + 0.5),
                torch.tensor([te]), torch.tensor([tr]))


def test_replay_n_step_stops_at_termination_and_does_not_bootstrap():
    buf = ReplayBuffer(10, 1, (1,), (1, 1))
    _fill(buf, [1.0, 2.0, 4.0, 8.0], [False, True, False, False], [False, False, False, False])
    g = torch.Generator().manual_seed(0)
    batches = [buf.sample(64, n_step=3, discount=0.5, generator=g) for _ in range(3)]
    for batch in batches:
        for obs, reward, nxt, boot, n in zip(batch["obs"][:, 0], batch["reward"], batch["next_obs"][:, 0], batch["bootstrap"], batch["n"]):
            start = int(obs)
            if start == 0:  # 1 + 0.5*2, then the episode terminated at step 1
                assert (reward.item(), nxt.item(), boot.item(), n.item()) == (2.0, 1.5, 0.0, 2)
            elif start == 1:
                assert (reward.item(), boot.item(), n.item()) == (2.0, 0.0, 1)
            elif start == 2:  # 4 + 0.5*8, and step 3 is the newest transition written
                assert (reward.item(), nxt.item(), boot.item(), n.item()) == (8.0, 3.5, 0.25, 2)


def test_replay_truncation_is_bootstrapped_and_circular_overwrite_keeps_newest():
    buf = ReplayBuffer(3, 1, (1,), (1, 1))
    _fill(buf, [1.0, 1.0, 1.0, 1.0, 1.0], [False] * 5, [False, False, False, True, False])
    assert len(buf) == 3
    batch = buf.sample(200, n_step=2, discount=0.9, generator=torch.Generator().manual_seed(1))
    starts = set(batch["obs"][:, 0].tolist())
    assert starts == {2.0, 3.0, 4.0}  # steps 0 and 1 were overwritten
    for obs, reward, boot in zip(batch["obs"][:, 0], batch["reward"], batch["bootstrap"]):
        if obs == 3.0:  # truncated at step 3: one transition, bootstrapped with discount^1
            assert reward.item() == pytest.approx(1.0) and boot.item() == pytest.approx(0.9)
        if obs == 2.0:
            assert reward.item() == pytest.approx(1.9) and boot.item() == pytest.approx(0.81)
