"""The chunk-level transition store: n-step targets across termination, truncation and wrap-around,
the success view, demonstrations as transitions, and an exact state_dict round trip."""

import numpy as np
import pytest
import torch

from robopol.data.transitions import TransitionStore


def _fill(store: TransitionStore, rewards, terminated, truncated, success=None):
    """Transition i of one env: obs i, next obs i + 0.5, reward rewards[i]."""
    for i, (r, te, tr) in enumerate(zip(rewards, terminated, truncated)):
        store.add(torch.full((1, 1), float(i)), torch.zeros(1, 1, 1), torch.tensor([r]), torch.full((1, 1), i + 0.5),
                  torch.tensor([te]), torch.tensor([tr]), None if success is None else torch.tensor([success[i]]))


def _by_start(batch):
    return {int(o): (r.item(), nxt.item(), b.item(), n.item())
            for o, r, nxt, b, n in zip(batch["obs"][:, 0], batch["reward"], batch["next_obs"][:, 0], batch["bootstrap"], batch["n"])}


def test_n_step_stops_at_termination_and_does_not_bootstrap():
    store = TransitionStore(10, 1, (1,), (1, 1))
    _fill(store, [1.0, 2.0, 4.0, 8.0], [False, True, False, False], [False, False, False, False])
    seen = _by_start(store.sample(256, n_step=3, discount=0.5, generator=torch.Generator().manual_seed(0)))
    assert seen[0] == (2.0, 1.5, 0.0, 2)  # 1 + 0.5*2, then the episode terminated at step 1: no bootstrap
    assert seen[1] == (2.0, 1.5, 0.0, 1)
    assert seen[2] == (8.0, 3.5, 0.25, 2)  # 4 + 0.5*8; step 3 is the newest written: bootstrap 0.5^2
    assert seen[3] == (8.0, 3.5, 0.5, 1)


def test_truncation_is_bootstrapped_and_wrap_around_keeps_the_newest():
    store = TransitionStore(3, 1, (1,), (1, 1))
    _fill(store, [1.0] * 5, [False] * 5, [False, False, False, True, False])
    assert len(store) == 3
    seen = _by_start(store.sample(300, n_step=2, discount=0.9, generator=torch.Generator().manual_seed(1)))
    assert set(seen) == {2, 3, 4}  # steps 0 and 1 were overwritten
    assert seen[3] == pytest.approx((1.0, 3.5, 0.9, 1))  # truncated at step 3: bootstrapped from its final obs
    assert seen[2] == pytest.approx((1.9, 3.5, 0.81, 2))  # window 2 -> 3 wraps around the circular storage
    assert seen[4] == pytest.approx((1.0, 4.5, 0.9, 1))  # newest: nothing after it yet


def test_one_step_targets_after_wrap_around_for_both_views():
    """n_step=1 has its own short path in sample(): one reward, bootstrap = discount unless terminated."""
    store = TransitionStore(4, 1, (1,), (1, 1))
    _fill(store, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [False, False, False, True, False, False],
          [False, True, False, False, False, False], success=[False, False, False, True, False, False])
    seen = _by_start(store.sample(300, n_step=1, discount=0.9, generator=torch.Generator().manual_seed(2)))
    assert seen == {2: (3.0, 2.5, pytest.approx(0.9), 1), 3: (4.0, 3.5, 0.0, 1),  # 3 terminated: no bootstrap
                    4: (5.0, 4.5, pytest.approx(0.9), 1), 5: (6.0, 5.5, pytest.approx(0.9), 1)}
    successes = _by_start(store.sample(50, n_step=1, discount=0.9, view="success", generator=torch.Generator().manual_seed(3)))
    assert successes == {2: (3.0, 2.5, pytest.approx(0.9), 1), 3: (4.0, 3.5, 0.0, 1)}  # the episode of steps 2-3


def test_success_view_holds_every_transition_of_successful_episodes_only():
    store = TransitionStore(8, 1, (1,), (1, 1))
    # episode A: steps 0-2, success reported at its last step; episode B: steps 3-4, never succeeds
    _fill(store, [0.0] * 6, [False, False, True, False, False, False], [False, False, False, False, True, False],
          success=[False, False, True, False, False, False])
    assert store.num_successful == 3
    starts = set(store.sample(200, view="success", generator=torch.Generator().manual_seed(2))["obs"][:, 0].tolist())
    assert starts == {0.0, 1.0, 2.0}
    empty = TransitionStore(4, 1, (1,), (1, 1))
    _fill(empty, [0.0], [False], [False])
    with pytest.raises(RuntimeError, match="no successful episode"):
        empty.sample(4, view="success")


def test_columns_follow_each_env_and_episode_ids_change_at_every_end():
    store = TransitionStore(4, 2, (1,), (1, 1))
    for t in range(3):  # env 0 ends at t=0 (terminated), env 1 at t=1 (truncated)
        store.add(torch.tensor([[t], [10.0 + t]]), torch.zeros(2, 1, 1), torch.zeros(2), torch.zeros(2, 1),
                  torch.tensor([t == 0, False]), torch.tensor([False, t == 1]))
    episodes = store.columns["episode"][:3]
    assert episodes[0, 0] != episodes[1, 0] and episodes[1, 0] == episodes[2, 0]
    assert episodes[0, 1] == episodes[1, 1] != episodes[2, 1]
    assert len(set(episodes.flatten().tolist())) == 4


def test_state_dict_round_trip_restores_sampling_exactly():
    store = TransitionStore(5, 2, (1, 3), (2, 1), extras={"log_prob": ()})
    for t in range(7):  # wraps around
        store.add(torch.randn(2, 1, 3), torch.randn(2, 2, 1), torch.randn(2), torch.randn(2, 1, 3),
                  torch.tensor([t == 3, False]), torch.tensor([False, t == 5]), torch.tensor([t == 3, False]),
                  log_prob=torch.randn(2))
    copy = TransitionStore(5, 2, (1, 3), (2, 1), extras={"log_prob": ()})
    copy.load_state_dict(store.state_dict())
    a = store.sample(32, n_step=3, generator=torch.Generator().manual_seed(3))
    b = copy.sample(32, n_step=3, generator=torch.Generator().manual_seed(3))
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert copy.num_successful == store.num_successful > 0


def test_demonstrations_become_chunk_transitions():
    """One 5-step episode, chunks of 2 executed actions (horizon 3): transitions start at steps 0, 2, 4."""
    obs = [np.arange(5, dtype=np.float32)[:, None]]
    actions = [np.arange(5, dtype=np.float32)[:, None] / 10]
    rewards = [np.array([1, 2, 3, 4, 5], dtype=np.float32)]
    success = [np.array([0, 0, 0, 0, 1], dtype=bool)]
    store = TransitionStore(10, 1, (1, 1), (3, 1))
    store.add_episodes(obs, actions, rewards, success, n_obs_steps=1, horizon=3, n_action_steps=2)
    c = store.columns
    assert store.size == 3
    np.testing.assert_array_equal(c["obs"][:3, 0, 0, 0], [0, 2, 4])
    np.testing.assert_allclose(c["actions"][:3, 0, :, 0], [[0, 0.1, 0.2], [0.2, 0.3, 0.4], [0.4, 0.4, 0.4]], rtol=1e-6)
    np.testing.assert_array_equal(c["reward"][:3, 0], [3, 7, 5])  # chunk rewards
    np.testing.assert_array_equal(c["next_obs"][:3, 0, 0, 0], [2, 4, 4])
    assert c["terminated"][:3, 0].tolist() == [False, False, True]  # the last step succeeded
    assert store.num_successful == 3
