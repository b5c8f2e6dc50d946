"""The one tolerance table: every stage bounded, bounds that fail what they should, and the `bench` fixture storing
each bound and verdict beside the value (and failing the benchmark) from the same table."""

import math
import os
import subprocess
from pathlib import Path

import pytest
from helpers import pytest_child

from rvc_bench import store, tolerances


def test_every_stage_has_benchmark_bounds_and_the_table_is_well_formed():
    table = tolerances.table()
    assert {s for s, c, _, _ in table if c == tolerances.BENCHMARK} == {"mel", "rmvpe", "hubert", "synth", "pipeline"}
    assert all(b.op in tolerances.OPS and math.isfinite(b.bound) and b.why for b in table.values())
    # a backend's own row only refines a bound every backend has
    assert all((s, c, m, "") in table for s, c, m, be in table if be)


def test_a_backend_row_replaces_the_shared_bound_for_that_backend_only():
    onnx, shared = tolerances.bounds("mel", backend="onnx"), tolerances.bounds("mel")
    assert (
        onnx["max_abs_energetic"].backend == "onnx"
        and onnx["max_abs_energetic"].bound > shared["max_abs_energetic"].bound
    )
    assert onnx["rel_l2"] == shared["rel_l2"] and tolerances.bounds("mel", backend="mlx") == shared
    value = {"rel_l2": 1e-5, "max_abs_energetic": 3.4e-5}  # ONNX Runtime's STFT at 5 s
    assert tolerances.broken("mel", "benchmark", value, backend="onnx") == []
    assert tolerances.broken("mel", "benchmark", value, backend="mlx") == [
        "max_abs_energetic = 3.4e-05 (bound max_abs_energetic <= 2e-05)"
    ]


def test_a_bound_fails_beyond_it_on_nan_and_when_missing():
    assert tolerances.broken("synth", "benchmark", {"snr_db": 75.0}) == []
    assert tolerances.broken("synth", "benchmark", {"snr_db": math.inf}) == []  # identical outputs
    assert tolerances.broken("synth", "benchmark", {"snr_db": 42.0}) == ["snr_db = 42 (bound snr_db >= 60)"]
    assert tolerances.broken("synth", "benchmark", {"snr_db": math.nan}) == ["snr_db = nan (bound snr_db >= 60)"]
    assert tolerances.broken("synth", "benchmark", {"max_abs": 0.0}) == ["snr_db missing (bound snr_db >= 60)"]
    # `only`: part of a stage's bounds (RMVPE's salience without its f0)
    assert tolerances.broken("rmvpe", "benchmark", {"max_abs": 1e-3, "pearson": 1.0}, only=("max_abs", "pearson")) == []
    with pytest.raises(AssertionError, match="rmvpe/chunked parity: max_abs = 0.5"):
        tolerances.assert_within("rmvpe", "chunked", {"max_abs": 0.5, "pearson": 1.0})
    with pytest.raises(tolerances.ToleranceError, match="no bounds for rmvpe/nonsense"):
        tolerances.assert_within("rmvpe", "nonsense", {})


BENCHMARK_FILE = """
import numpy as np

def test_bench_fake_mel(benchmark, bench):
    be = bench.backend("numpy")
    bench.measure(benchmark, be, lambda x: x * 2, (np.ones(4),), stage="mel", variant="fake", seconds=1.0)
    bench.record_parity({"rel_l2": 0.5, "max_abs_energetic": 1e-6, "pearson": 1.0}, reference="numpy-float64")
"""


def run_fake_benchmark(tmp_path, source: str) -> subprocess.CompletedProcess:
    """`source` as a benchmark file run by pytest with the plugin, 3 rounds, into tmp_path/store."""
    (tmp_path / "test_fake.py").write_text(source)
    # the plugin of the package under test, also where it is imported from a checkout by a relative PYTHONPATH
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(tolerances.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    plugin = ("-p", "rvc_bench.pytest_plugin")
    return pytest_child(
        *plugin, "test_fake.py", "--benchmark-only", "--rounds", 3, "--store", tmp_path / "store", cwd=tmp_path, env=env
    )


def test_bench_fixture_stores_bound_and_verdict_and_fails_the_benchmark(tmp_path):
    proc = run_fake_benchmark(tmp_path, BENCHMARK_FILE)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "mel/fake parity: rel_l2 = 0.5 (bound rel_l2 <= 0.0001)" in proc.stdout
    rows = store.read(tmp_path / "store").rows
    par = rows[rows.metric.str.startswith("parity.")].set_index("metric")
    assert par.at["parity.rel_l2", "bound"] == 1e-4 and par.at["parity.rel_l2", "bound_op"] == "<="
    assert not par.at["parity.rel_l2", "within_bound"] and par.at["parity.max_abs_energetic", "within_bound"]
    assert par["within_bound"].isna()["parity.pearson"]  # not bounded: stored without a verdict
    assert (rows.metric == "time_warm").sum() == 3  # the failed benchmark's times are kept too


ONLY_FILE = BENCHMARK_FILE.replace(
    '{"rel_l2": 0.5, "max_abs_energetic": 1e-6, "pearson": 1.0}, ',
    '{"rel_l2": 1e-5, "pearson": 1.0}, only=("rel_l2",), ',
)


def test_record_parity_only_bounds_part_of_a_check(tmp_path):
    """only=: a bound outside it is not missing (e.g. the spectral metrics tiny pipeline rows cannot have)."""
    proc = run_fake_benchmark(tmp_path, ONLY_FILE)
    assert proc.returncode == 0, proc.stdout[-3000:]
    par = store.read(tmp_path / "store").rows.set_index("metric")
    assert par.at["parity.rel_l2", "within_bound"] and par.at["parity.rel_l2", "bound"] == 1e-4
    assert "parity.max_abs_energetic" not in par.index


DEVICE_FILE = '''
import numpy as np
import pytest
from rvc_bench.backends import NumpyBackend


class FakeTorch(NumpyBackend):
    """numpy standing in for torch on a device, so that the test needs neither torch nor a GPU."""

    def __init__(self, device):
        super().__init__()
        self.name, self.device = "torch", device


@pytest.mark.parametrize("device", ["mps", "cpu"])
def test_bench_fake_hubert(benchmark, bench, device):
    be = FakeTorch(device)
    bench.session.descriptions[be.label] = {"label": be.label}
    bench.measure(benchmark, be, lambda x: x * 2, (np.ones(4),), stage="hubert", variant="fake", seconds=1.0)
    bench.record_parity({"rel_l2": 0.5}, reference="torch")
'''


def test_torch_on_a_device_is_compared_with_torch_on_the_cpu(tmp_path):
    """The reference "torch" is torch on the CPU: that benchmark has nothing to compare, but torch on MPS or CUDA is
    judged by the table like any other backend (it was once timed with no parity check at all)."""
    proc = run_fake_benchmark(tmp_path, DEVICE_FILE)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    assert "FAILED test_fake.py::test_bench_fake_hubert[mps]" in proc.stdout
    assert "hubert/fake parity: rel_l2 = 0.5 (bound rel_l2 <= 0.0001)" in proc.stdout
    rows = store.read(tmp_path / "store").rows
    parity = rows[rows.metric == "parity.rel_l2"]
    assert list(parity.device) == ["mps"] and not parity.within_bound.iloc[0]
