"""Safe loading: tensors load, config objects come back as plain data, code-running pickles are refused and run
nothing (the payload corpus is tests/test_hostile_checkpoints.py); strict checks refuse non-finite weights."""

import argparse
import os

import numpy as np
import pytest
import torch

from rvc_bench import checkpoints
from rvc_bench.layout import CheckpointError, check_shapes


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_state_dict_loads_with_weights_only(tmp_path):
    path = tmp_path / "w.pt"
    checkpoints.save_torch_checkpoint(path, {"a": torch.arange(3, dtype=torch.float16)})
    state = checkpoints.load_pickled(path)
    assert checkpoints.to_numpy_state(state)["a"].dtype == np.float32


def test_config_objects_become_plain_data(tmp_path):
    path = tmp_path / "fairseq_like.pt"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(label_rate=50)}, path)
    obj = checkpoints.load_pickled(path)
    assert torch.equal(obj["model"]["w"], torch.ones(2))
    assert type(obj["args"]) is dict and obj["args"] == {"label_rate": 50}


def test_non_finite_weights_are_refused_by_the_strict_check():
    good = {"a": np.ones(2, np.float32), "n": np.arange(3)}
    check_shapes({"a": (2,), "n": (3,)}, good, "m")
    for bad in (np.nan, np.inf):
        with pytest.raises(CheckpointError, match="m: key 'a' holds NaN or infinite values"):
            check_shapes({"a": (2,), "n": (3,)}, {**good, "a": np.array([1, bad], np.float32)}, "m")
    with pytest.raises(CheckpointError, match="key 'a'"):  # torch tensors too (hubert checks them as loaded)
        check_shapes({"a": (2,)}, {"a": torch.tensor([1.0, float("nan")], dtype=torch.float16)}, "m")


def test_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "x": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load global posix.system|refusing to load global os.system"):
        checkpoints.load_pickled(path)
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoints.load_pickled(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="bad.pt"):
        checkpoints.load_pickled(bad)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: empty file"):
        checkpoints.load_pickled(tmp_path / "empty.pt")


def test_safetensors_round_trip_with_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    checkpoints.save_safetensors(path, {"x": np.arange(4, dtype=np.float32)}, {"config": [1, 2], "sr": "40k"})
    weights, meta = checkpoints.load_safetensors(path)
    np.testing.assert_array_equal(weights["x"], np.arange(4))
    assert meta == {"config": [1, 2], "sr": "40k"}
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        checkpoints.load_safetensors(tmp_path / "bad.safetensors")


def test_safetensors_with_broken_metadata_name_the_file(tmp_path):
    from safetensors.numpy import save

    path = tmp_path / "meta.safetensors"
    path.write_bytes(save({"x": np.ones(1, np.float32)}, metadata={"rvc_bench": "{not json"}))
    with pytest.raises(CheckpointError, match="meta.safetensors: not a readable safetensors file"):
        checkpoints.load_safetensors(path)
    path.write_bytes(save({"x": np.ones(1, np.float32)}, metadata={"rvc_bench": "[1, 2]"}))
    with pytest.raises(CheckpointError, match="meta.safetensors: its rvc_bench metadata is not a JSON object"):
        checkpoints.load_safetensors(path)
