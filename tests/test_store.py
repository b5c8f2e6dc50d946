"""The run store: one file per benchmark, atomic, readable as one table by plain tools, incomplete runs visible,
a corrupt file named and skipped."""

import json
import subprocess
from datetime import datetime, timedelta

import helpers
import pandas as pd
import pyarrow.dataset as ds
import pytest

from rvc_bench import store


def add_times(run: store.Run, backend: str, times, stage="mel", seconds=5.0, test=None):
    test = test or f"suites/test_x.py::test_bench[{seconds:g}s-{backend}]"
    helpers.add_times(run, times, stage=stage, variant="v", backend=backend, audio_seconds=seconds, test=test)


def make_run(machine_id="m-1", **kw) -> store.Run:
    return store.Run(machine_id=machine_id, model_size="tiny", meta={"machine": {"cpu": "test"}}, **kw)


def test_each_benchmark_is_its_own_file_and_the_store_reads_as_one_table(tmp_path):
    run = make_run()
    add_times(run, "torch", [1.0, 1.1])
    first = run.flush(tmp_path, "suites/test_x.py::test_bench[5s-torch]")
    assert run.rows == []  # the buffer is written and cleared
    add_times(run, "mlx", [2.0, 2.1])
    second = run.flush(tmp_path, "suites/test_x.py::test_bench[5s-mlx]")
    other = make_run(machine_id="m-2")
    add_times(other, "torch", [3.0])
    other.flush(tmp_path, "b")
    assert first.parent == second.parent == tmp_path / "machine=m-1" / f"run={run.run_id}"
    assert not list(tmp_path.rglob(".tmp*")), "no temporary files left behind"
    # plain pandas / pyarrow, no project code: hive partitions become columns
    table = pd.read_parquet(tmp_path)
    assert len(table) == 5 and set(table["machine"].astype(str)) == {"m-1", "m-2"}
    assert set(table["run"].astype(str)) == {run.run_id, other.run_id}
    dataset = ds.dataset(tmp_path, format="parquet", partitioning="hive")
    assert dataset.to_table().num_rows == 5
    st = store.read(tmp_path)
    assert len(st.rows) == 5 and list(st.rows.columns) == list(store.COLUMNS) and not st.problems
    assert st.runs[run.run_id].meta["machine"] == {"cpu": "test"}


def test_a_process_that_did_not_finish_leaves_its_run_incomplete(tmp_path):
    run = make_run()
    tests = ["suites/test_x.py::test_bench[5s-torch]", "suites/test_x.py::test_bench[60s-torch]"]
    run.write_part(tmp_path, "torch", tests)  # what the process is about to do
    add_times(run, "torch", [1.0, 1.1], test=tests[0])
    run.flush(tmp_path, tests[0])  # ... then it is killed during the second benchmark
    info = store.read(tmp_path).runs[run.run_id]
    assert info.missing() == ["the torch process did not finish (1 of 2 benchmarks stored)"]
    assert info.wall_seconds() is None  # no end: no wall time
    run.write_part(tmp_path, "torch", tests, {tests[0]: "passed", tests[1]: "error in setup"})
    assert store.read(tmp_path).runs[run.run_id].missing() == ["test_bench[60s-torch]: error in setup"]
    assert store.read(tmp_path).runs[run.run_id].wall_seconds() is None  # ended, but not complete


def test_a_complete_run_has_its_wall_time(tmp_path):
    run = make_run()
    test = "suites/test_x.py::test_bench[5s-torch]"
    add_times(run, "torch", [1.0], test=test)
    run.flush(tmp_path, test)
    run.write_part(tmp_path, "torch", [test], {test: "passed"})
    part = next(tmp_path.glob("machine=*/run=*/_part-torch.json"))
    meta = json.loads(part.read_text())
    start = datetime.strptime(run.started_at, "%Y-%m-%dT%H:%M:%SZ")
    meta["written_at"] = (start + timedelta(seconds=570)).strftime("%Y-%m-%dT%H:%M:%SZ")  # its process ended then
    part.write_text(json.dumps(meta))
    assert store.read(tmp_path).runs[run.run_id].wall_seconds() == 570.0


def test_a_planned_backend_that_never_started_is_missing(tmp_path):
    run = make_run()
    store.write_run_plan(tmp_path, run.machine_id, run.run_id, run.started_at, {"backends": ["torch", "mlx"]})
    test = "suites/test_x.py::test_bench[5s-torch]"
    run.write_part(tmp_path, "torch", [test], {test: "passed"})
    add_times(run, "torch", [1.0], test=test)
    run.flush(tmp_path, test)
    assert store.read(tmp_path).runs[run.run_id].missing() == ["mlx never started"]


def test_corrupt_and_old_format_files_are_named_and_others_still_load(tmp_path):
    good = make_run()
    add_times(good, "torch", [1.0, 1.1])
    good.flush(tmp_path, "good")
    bad = tmp_path / "machine=m-1" / f"run={good.run_id}" / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    (tmp_path / "run-20200101T000000Z-old.parquet").write_bytes(b"old")
    with pytest.warns(UserWarning) as warned:
        st = store.read(tmp_path)
    assert len(warned) == 2
    assert len(st.rows) == 2
    assert len(st.problems) == 2 and any("broken.parquet" in p for p in st.problems)
    assert any("run-20200101T000000Z-old.parquet" in p and "older store format" in p for p in st.problems)


def test_empty_benchmark_is_not_written(tmp_path):
    with pytest.raises(store.StoreError):
        make_run().flush(tmp_path, "x")
    assert not list(tmp_path.iterdir())


def test_building_rows_spawns_no_process(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a store unit test must not spawn a process (git)")

    monkeypatch.setattr(subprocess, "run", refuse)
    run = make_run()
    add_times(run, "torch", [1.0])
    run.flush(tmp_path, "x")
    assert run.git_commit == "unknown"


def test_part_file_is_plain_json(tmp_path):
    run = make_run()
    path = run.write_part(tmp_path, "torch+mlx", ["a"])
    meta = json.loads(path.read_text())
    assert path.name == "_part-torch-mlx.json" and meta["tests"] == ["a"] and meta["outcomes"] is None


def test_git_state_outside_a_repository(tmp_path):
    assert store.git_state(tmp_path) == ("unknown", False)


def test_a_run_that_stored_nothing_is_discarded_and_one_that_did_is_kept(tmp_path):
    empty, kept = make_run(), make_run()
    for run in (empty, kept):
        store.write_run_plan(tmp_path / "s", run.machine_id, run.run_id, run.started_at, {"backends": ["torch"]})
        run.write_part(tmp_path / "s", "torch", ["t"])
    add_times(kept, "torch", [1.0])
    kept.flush(tmp_path / "s", "t")
    assert store.discard_if_empty(tmp_path / "s", empty.machine_id, empty.run_id)
    assert not store.discard_if_empty(tmp_path / "s", kept.machine_id, kept.run_id)
    assert list(store.read(tmp_path / "s").runs) == [kept.run_id]


def test_stream_settings_are_columns_and_files_written_before_them_read_as_nan(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    run = make_run()
    settings = dict(block_time=0.25, crossfade_time=0.05, extra_time=2.5)
    row = dict(stage="stream", variant="v", backend="torch", device="cpu", device_name="", dtype="float32")
    row |= dict(audio_seconds=5.0, metric="stream.p50_ms", value=12.0, unit="ms")
    run.add(**row, **settings)
    path = run.flush(tmp_path, "stream")
    old = make_run(run_id="old-run")
    add_times(old, "torch", [2.0])
    old_path = old.flush(tmp_path, "old")
    table = pq.read_table(old_path)  # a file from before the stream columns: drop them
    pq.write_table(
        table.drop_columns(list(store.STREAM_COLUMNS)).replace_schema_metadata(table.schema.metadata), old_path
    )
    rows = store.read(tmp_path).rows.set_index("run_id")
    assert rows.loc[run.run_id, ["block_time", "crossfade_time", "extra_time"]].tolist() == [0.25, 0.05, 2.5]
    assert np.isnan(rows.loc["old-run", ["block_time", "crossfade_time", "extra_time"]].astype(float)).all()
    assert pq.read_schema(path).names == list(store.COLUMNS)
    with pytest.raises(TypeError, match="unknown row settings"):
        run.add(**row, block=0.25)
