"""robomimic HDF5: round trip, robomimic's own reader, validation errors, atomic writes."""

import json

import h5py
import numpy as np
import pytest

from robopol.data.episodes import Episode
from robopol.data.robomimic_hdf5 import read_robomimic_hdf5, write_robomimic_hdf5
from robopol.errors import DataError
from robopol.sim.robomimic import OBS_KEYS

DIMS = dict(zip(OBS_KEYS, (3, 4, 2, 10)))  # Lift
ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}


def _episode(rng, steps):
    obs = {k: rng.normal(size=(steps, d)).astype(np.float32) for k, d in DIMS.items()}
    rewards = np.zeros(steps, np.float32)
    rewards[-1] = 1.0
    return Episode(obs=obs, actions=rng.uniform(-1, 1, (steps, 7)).astype(np.float32), rewards=rewards,
                   dones=rewards > 0, states=rng.normal(size=(steps, 32)))


@pytest.fixture
def episodes():
    rng = np.random.default_rng(0)
    return [_episode(rng, steps) for steps in (5, 8, 3, 6)]


@pytest.fixture
def lift_file(tmp_path, episodes):
    return write_robomimic_hdf5(tmp_path / "lift.hdf5", episodes, ENV_ARGS, valid_fraction=0.25)


def test_round_trip_keeps_every_array_and_the_key_order(lift_file, episodes):
    demos = read_robomimic_hdf5(lift_file, "lift")
    assert demos.obs_keys == OBS_KEYS and demos.obs_dim == 19 and demos.act_dim == 7
    assert demos.env_args == ENV_ARGS and demos.num_samples == 22
    assert sorted(demos.train_names + demos.valid_names) == sorted(f"demo_{i}" for i in range(4))
    assert len(demos.valid_names) == 1
    for got, want in zip(demos.episodes, episodes):
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.rewards, want.rewards)
        np.testing.assert_array_equal(got.dones, want.dones)
        np.testing.assert_allclose(got.states, want.states)
        np.testing.assert_array_equal(got.flat_obs, np.concatenate([want.obs[k] for k in OBS_KEYS], axis=1))
        # without next_obs the writer shifts obs by one step
        np.testing.assert_array_equal(got.next_obs["object"][:-1], want.obs["object"][1:])
    with h5py.File(lift_file) as f:
        assert f["data"].attrs["total"] == 22 and f["data/demo_1"].attrs["num_samples"] == 8
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "Lift"
        assert f["mask/train"].dtype.kind == "S"


def test_robomimic_sequence_dataset_reads_the_file(lift_file):
    obs_utils = pytest.importorskip("robomimic.utils.obs_utils")
    dataset = pytest.importorskip("robomimic.utils.dataset")
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": list(OBS_KEYS), "rgb": []}})
    ds = dataset.SequenceDataset(hdf5_path=str(lift_file), obs_keys=list(OBS_KEYS),
                                 dataset_keys=("actions", "rewards", "dones"), seq_length=4,
                                 hdf5_cache_mode="low_dim", filter_by_attribute="train")
    lengths = {f"demo_{i}": n for i, n in enumerate((5, 8, 3, 6))}
    assert len(ds) == sum(lengths[name] for name in read_robomimic_hdf5(lift_file, "lift").train_names)
    item = ds[0]
    assert item["actions"].shape == (4, 7) and item["obs"]["object"].shape == (4, 10)


def _corrupt(path, edit):
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


@pytest.mark.parametrize("edit, named", [
    (lambda f: f["data/demo_1/obs"].__delitem__("object"), "data/demo_1/obs/object"),
    (lambda f: f["data/demo_2"].__delitem__("actions"), "data/demo_2/actions"),
    (lambda f: f["data"].attrs.__delitem__("env_args"), "env_args"),
])
def test_missing_keys_are_named(lift_file, edit, named):
    with pytest.raises(DataError, match=named):
        read_robomimic_hdf5(_corrupt(lift_file, edit), "lift")


def _replace(key, value):
    def edit(f):
        del f[key]
        f[key] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_replace("data/demo_0/obs/robot0_eef_pos", np.zeros((4, 3))), r"data/demo_0/obs/robot0_eef_pos has shape \(4, 3\); expected \(5, 3\)"),
    (_replace("data/demo_0/obs/object", np.zeros((5, 14))), r"data/demo_0/obs/object has shape \(5, 14\); expected \(5, 10\)"),
    (_replace("data/demo_3/actions", np.zeros((6, 6))), r"data/demo_3/actions has shape \(6, 6\); expected \(T, 7\)"),
    (_replace("data/demo_3/rewards", np.zeros(5)), r"data/demo_3/rewards has shape \(5,\); expected \(6,\)"),
])
def test_wrong_shapes_name_key_and_expectation(lift_file, edit, message):
    with pytest.raises(DataError, match=message):
        read_robomimic_hdf5(_corrupt(lift_file, edit), "lift")


def test_a_file_for_another_task_is_refused(lift_file):
    with pytest.raises(DataError, match=r"env_name.*'Lift'.*task 'square' expects 'NutAssemblySquare'"):
        read_robomimic_hdf5(lift_file, "square")


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(DataError, match="no such demonstration file"):
        read_robomimic_hdf5(tmp_path / "nope.hdf5", "lift")
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        read_robomimic_hdf5(tmp_path / "text.hdf5", "lift")


def test_interrupted_write_leaves_no_file(tmp_path, episodes):
    def dying():
        yield episodes[0]
        yield episodes[1]
        raise KeyboardInterrupt

    out = tmp_path / "demos.hdf5"
    with pytest.raises(KeyboardInterrupt):
        write_robomimic_hdf5(out, dying(), ENV_ARGS)
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_the_old_file_whole(tmp_path, episodes):
    out = tmp_path / "demos.hdf5"
    write_robomimic_hdf5(out, episodes, ENV_ARGS)
    write_robomimic_hdf5(out, episodes[:1], ENV_ARGS)
    assert len(read_robomimic_hdf5(out, "lift").episodes) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["demos.hdf5"]
