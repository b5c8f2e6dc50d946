"""The run store: tidy rows, atomic writes, runs side by side, a corrupt file named and skipped."""

import pytest

from rvc_bench import store


def make_run(value: float) -> store.Run:
    run = store.Run(meta={"machine": {"cpu": "test"}})
    for i, t in enumerate([value, value * 1.1]):
        run.add(stage="mel", variant="v", backend="mlx", device="cpu", device_name="cpu", dtype="float32",
                audio_seconds=5, metric="time_warm", value=t, unit="s", round=i)
    return run


def test_runs_append_without_clobbering(tmp_path):
    a, b = make_run(1.0), make_run(2.0)
    pa_, pb = a.write(tmp_path), b.write(tmp_path)
    assert pa_ != pb and pa_.exists() and pb.exists()
    st = store.read(tmp_path)
    assert len(st.rows) == 4 and set(st.runs) == {a.run_id, b.run_id}
    assert st.runs[a.run_id]["machine"] == {"cpu": "test"}
    assert list(st.rows.columns) == list(store.COLUMNS)
    assert not list(tmp_path.glob(".tmp*")), "no temporary files left behind"


def test_corrupt_file_is_named_and_others_still_load(tmp_path):
    good = make_run(1.0)
    good.write(tmp_path)
    (tmp_path / "run-20200101T000000Z-broken.parquet").write_bytes(b"not parquet at all")
    with pytest.warns(UserWarning, match="broken"):
        st = store.read(tmp_path)
    assert len(st.rows) == 2
    assert len(st.problems) == 1 and "run-20200101T000000Z-broken.parquet" in st.problems[0]


def test_empty_run_is_not_written(tmp_path):
    with pytest.raises(store.StoreError):
        store.Run().write(tmp_path)
    assert not list(tmp_path.iterdir())


def test_git_state_outside_a_repository(tmp_path):
    assert store.git_state(tmp_path) == ("unknown", False)
