"""PushT zarr replay buffers: round trip in zarr formats 2 and 3, diffusion_policy's layout, validation."""

import numpy as np
import pytest
import zarr

from robopol.data.episodes import Episode
from robopol.data.pusht_zarr import read_pusht_zarr, write_pusht_zarr
from robopol.errors import DataError
from robopol.sim import pusht


def _episode(rng, steps):
    state = np.column_stack([rng.uniform(50, 450, (steps, 4)), rng.uniform(0, 2 * np.pi, steps)]).astype(np.float32)
    obs = {"state": state, "keypoint": pusht.keypoints(state[:, 2:5]).reshape(steps, 16).astype(np.float32)}
    return Episode(obs=obs, actions=rng.uniform(0, 512, (steps, 2)).astype(np.float32),
                   rewards=rng.uniform(0, 1, steps).astype(np.float32), dones=np.arange(steps) == steps - 1)


@pytest.fixture
def episodes():
    rng = np.random.default_rng(1)
    return [_episode(rng, n) for n in (7, 4, 9)]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_round_trip(tmp_path, episodes, zarr_format):
    out = write_pusht_zarr(tmp_path / "pusht.zarr", episodes, zarr_format=zarr_format)
    assert zarr.open_group(str(out), mode="r").metadata.zarr_format == zarr_format
    state = read_pusht_zarr(out, "state")
    assert state.obs_keys == ("state",) and state.obs_dim == 5 and [len(e) for e in state.episodes] == [7, 4, 9]
    kps = read_pusht_zarr(out, "keypoints")
    assert kps.obs_keys == ("keypoint", "agent_pos") and kps.obs_dim == 18
    for s, k, want in zip(state.episodes, kps.episodes, episodes):
        np.testing.assert_array_equal(s.obs["state"], want.obs["state"])
        np.testing.assert_array_equal(s.actions, want.actions)
        np.testing.assert_array_equal(s.rewards, want.rewards)  # data/reward, as written
        np.testing.assert_array_equal(k.flat_obs, np.concatenate([want.obs["keypoint"], want.obs["state"][:, :2]], 1))
        assert s.dones[-1]


def _diffusion_policy_store(path, ends=(6, 10), zarr_format=2):
    """A store laid out as diffusion_policy's pusht_cchi_v7_replay.zarr (no reward, 9 keypoints, images)."""
    rng = np.random.default_rng(2)
    n = ends[-1]
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    state = np.column_stack([rng.uniform(50, 450, (n, 4)), rng.uniform(0, 2 * np.pi, n)])
    state[3, 2:] = pusht.GOAL_POSE  # one step exactly at the goal: reward 1
    root.create_array("data/state", data=state)
    root.create_array("data/keypoint", data=rng.uniform(0, 512, (n, 9, 2)).astype(np.float32))
    root.create_array("data/action", data=rng.uniform(0, 512, (n, 2)))
    root.create_array("data/img", data=np.zeros((n, 8, 8, 3), np.uint8))
    root.create_array("data/n_contacts", data=np.zeros((n, 1)))
    root.create_array("meta/episode_ends", data=np.array(ends, np.int64))
    return path, state


def test_reads_diffusion_policy_layout_and_recomputes_rewards(tmp_path):
    path, state = _diffusion_policy_store(tmp_path / "dp.zarr")
    demos = read_pusht_zarr(path, "keypoints")
    assert [len(e) for e in demos.episodes] == [6, 4] and demos.obs_dim == 20  # 9*2 keypoints + agent
    rewards = np.concatenate([e.rewards for e in demos.episodes])
    np.testing.assert_allclose(rewards, pusht.reward(state[:, 2:5]), rtol=1e-6)
    assert rewards[3] == 1.0 and demos.episodes[0].dones[3] and demos.episodes[0].dones[-1]
    assert demos.episodes[0].dones.sum() == 2


def test_reads_a_zipped_store(tmp_path, episodes):
    store = zarr.storage.ZipStore(tmp_path / "pusht.zarr.zip", mode="w")
    root = zarr.open_group(store, mode="w", zarr_format=2)
    for name, value in {"data/state": episodes[0].obs["state"], "data/action": episodes[0].actions,
                        "meta/episode_ends": np.array([7])}.items():
        root.create_array(name, data=value)
    store.close()
    np.testing.assert_array_equal(read_pusht_zarr(tmp_path / "pusht.zarr.zip").episodes[0].actions, episodes[0].actions)


def _edit(path, key, value):
    root = zarr.open_group(str(path), mode="a")
    del root[key]
    if value is not None:
        root.create_array(key, data=value)
    return path


@pytest.mark.parametrize("key, value, message", [
    ("data/action", None, "missing key 'data/action'"),
    ("meta/episode_ends", None, "missing key 'meta/episode_ends'"),
    ("data/state", np.zeros((10, 4)), r"data/state has shape \(10, 4\); expected \(N, 5\)"),
    ("data/action", np.zeros((9, 2)), "data/action has 9 rows but data/state has 10"),
    ("data/action", np.zeros((10, 3)), r"data/action has shape \(10, 3\); expected \(N, 2\)"),
    ("meta/episode_ends", np.array([6, 12]), "episode_ends must be .* ending at len\\(data/state\\) = 10"),
    ("meta/episode_ends", np.array([6, 6, 10]), "strictly increasing"),
])
def test_bad_stores_name_the_key(tmp_path, key, value, message):
    path, _ = _diffusion_policy_store(tmp_path / "dp.zarr")
    with pytest.raises(DataError, match=message):
        read_pusht_zarr(_edit(path, key, value))


def test_keypoints_are_required_only_for_keypoint_obs(tmp_path):
    path = _edit(_diffusion_policy_store(tmp_path / "dp.zarr")[0], "data/keypoint", None)
    assert read_pusht_zarr(path, "state").obs_dim == 5
    with pytest.raises(DataError, match="missing key 'data/keypoint'"):
        read_pusht_zarr(path, "keypoints")


def test_store_for_another_task_and_missing_store(tmp_path, episodes):
    path = write_pusht_zarr(tmp_path / "x.zarr", episodes)
    zarr.open_group(str(path), mode="a").attrs["env_name"] = "BlockPush-v0"
    with pytest.raises(DataError, match="'BlockPush-v0'.*expects 'gym_pusht/PushT-v0'"):
        read_pusht_zarr(path)
    with pytest.raises(DataError, match="no such zarr store"):
        read_pusht_zarr(tmp_path / "missing.zarr")


def test_interrupted_write_leaves_nothing(tmp_path, episodes, monkeypatch):
    calls = []

    def dying_create_array(self, name, **kwargs):
        calls.append(name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, name, **kwargs)

    original = zarr.Group.create_array
    monkeypatch.setattr(zarr.Group, "create_array", dying_create_array)
    with pytest.raises(KeyboardInterrupt):
        write_pusht_zarr(tmp_path / "pusht.zarr", episodes)
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_rewrite_replaces_an_existing_store(tmp_path, episodes):
    out = tmp_path / "pusht.zarr"
    write_pusht_zarr(out, episodes)
    write_pusht_zarr(out, episodes[:1])
    assert len(read_pusht_zarr(out).episodes) == 1 and [p.name for p in tmp_path.iterdir()] == ["pusht.zarr"]
