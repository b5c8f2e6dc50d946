"""Safe loading: tensors load, config objects stay inert, code-running pickles are refused and run nothing."""

import argparse
import os

import numpy as np
import pytest
import torch

from rvc_bench import checkpoints
from rvc_bench.layout import CheckpointError


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


def test_config_objects_become_inert(tmp_path):
    path = tmp_path / "fairseq_like.pt"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(label_rate=50)}, path)
    obj = checkpoints.load_pickled(path)
    assert torch.equal(obj["model"]["w"], torch.ones(2))
    assert type(obj["args"]).__module__.startswith("inert.") and obj["args"].state == {"label_rate": 50}


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


def test_safetensors_round_trip_with_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    checkpoints.save_safetensors(path, {"x": np.arange(4, dtype=np.float32)}, {"config": [1, 2], "sr": "40k"})
    weights, meta = checkpoints.load_safetensors(path)
    np.testing.assert_array_equal(weights["x"], np.arange(4))
    assert meta == {"config": [1, 2], "sr": "40k"}
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        checkpoints.load_safetensors(tmp_path / "bad.safetensors")
