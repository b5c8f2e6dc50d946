"""The benchmarks document from real (tiny-model) runs: two machines never divided into each other, the document
restored byte for byte from the store, `report --check` catching one edited number, a killed run shown as incomplete
and never completed from an older run, tiny-model numbers kept out of full-size tables."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import add_times, pytest_child, rvc, sections

from rvc_bench import store
from rvc_bench.report import files
from rvc_bench.report import formatting as fmt

ROOT = Path(__file__).resolve().parents[1]
RUN = ("run", "--stages", "mel", "--lengths", "0.5", "--rounds", "3", "--model-size", "tiny")


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    """One store, two machines: the same box run twice under different machine labels (real runs, tiny models):
    once through `rvc-bench run` (one process per backend), once through the suite directly (one process)."""
    root = tmp_path_factory.mktemp("two")
    proc = rvc(*RUN, "--machine-label", "alpha", "--store", root / "store", "--no-report")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "mel/log-mel-128 mlx:cpu 0.5s" in proc.stdout  # progress while it runs
    options = (*RUN[3:], "--machine-label", "beta", "--store", root / "store")  # run's options but --stages
    proc = pytest_child(
        "suites/test_bench_mel.py", "--benchmark-only", *options, cwd=Path(__file__).resolve().parents[1]
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files.write(root / "store", root / "B.md")
    return root


def test_two_machines_get_their_own_sections_and_no_cross_machine_ratio(two_machines):
    doc = (two_machines / "B.md").read_text()
    st = store.read(two_machines / "store")
    machines = sorted(st.rows.machine_id.unique())
    assert [m.split("-")[0] for m in machines] == ["alpha", "beta"]
    machine_sections = {h: s for h, s in sections(doc).items() if h.startswith("Machine `")}
    assert len(machine_sections) == 2
    for machine_id, (heading, _text) in zip(machines, sorted(machine_sections.items())):
        assert machine_id in heading
        rows = st.rows[(st.rows.machine_id == machine_id) & (st.rows.metric == "time_warm")]
        assert rows.run_id.nunique() == 1
    # one speedup per machine, length and backend against torch in the summary, not the 2 x 2 cross product (the
    # same box twice cannot tell an own ratio from a crossed one: test_a_machine_s_speedup_is_formed_from_its_own_rows
    # does, on hand-made rows)
    summary = sections(doc)["Summary"]
    others = len(set(st.rows.backend) - {"torch", "numpy"})  # numpy: the mel reference, not in the summary
    assert others >= 1 and len(re.findall(r"\d× \(", summary)) == 2 * others


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS preload is Linux's")
def test_each_backend_process_recorded_the_blas_it_resolved(two_machines):
    from rvc_bench import blas

    st = store.read(two_machines / "store")
    (run,) = [r for r in st.runs.values() if r.machine_id.startswith("alpha")]  # made by `rvc-bench run`
    mlx, torch = run.backends["mlx:cpu"], run.backends["torch:cpu"]
    preload = blas.select("auto")
    assert preload is None or mlx["mlx_cpu_blas_path"] == preload.path  # MLX's process: the preload
    assert mlx["mlx_cpu_sgemm_gflops"] > 0 and torch["torch_cpu_sgemm_gflops"] > 0
    assert "own build" in torch["torch_blas"] and "interposed" not in torch["torch_blas"]  # torch's: its own


def test_deleting_the_document_and_reporting_restores_it_byte_for_byte(two_machines, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    files.write(two_machines / "store", out)
    first = out.read_bytes()
    figures = {p.name: p.read_bytes() for p in (tmp_path / "figures").iterdir()}
    assert len(figures) == 8  # four per machine section
    out.unlink()
    shutil.rmtree(tmp_path / "figures")
    assert rvc("report", "--store", two_machines / "store", "-o", out).returncode == 0
    assert out.read_bytes() == first
    assert {p.name: p.read_bytes() for p in (tmp_path / "figures").iterdir()} == figures
    refused = rvc("report", "--store", two_machines / "store", "-o", out)  # a file the user named: kept
    assert refused.returncode == 2 and "exists" in refused.stderr and out.read_bytes() == first
    assert rvc("report", "--store", two_machines / "store", "-o", out, "--force").returncode == 0
    assert out.read_bytes() == first


def test_check_fails_when_one_number_is_edited(two_machines, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    files.write(two_machines / "store", out)
    ok = rvc("report", "--check", "--store", two_machines / "store", "-o", out)
    assert ok.returncode == 0, ok.stderr
    text = out.read_text()
    number = re.search(r"\| (\d+\.\d+) ms ", text)
    out.write_text(text[: number.start(1)] + str(float(number.group(1)) + 0.01) + text[number.end(1) :])
    bad = rvc("report", "--check", "--store", two_machines / "store", "-o", out)
    assert bad.returncode == 1 and "differs from what the store generates" in bad.stderr
    assert out.read_text() != text  # --check writes nothing


def test_gate_passes_on_the_stored_parity(two_machines):
    proc = rvc("gate", "--store", two_machines / "store")
    assert proc.returncode == 0 and "0 failed" in proc.stdout, proc.stdout


def test_a_killed_run_keeps_what_finished_and_shows_as_incomplete(two_machines, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(two_machines / "store", store_dir)
    old = set(store.read(store_dir).runs)
    argv = [*RUN[:4], "0.5,1,2", *RUN[5:], "--machine-label", "alpha", "--store", str(store_dir), "--no-report"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rvc_bench.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.parent.name.removeprefix("run=") not in old for p in store_dir.rglob("*.parquet")):
            assert time.monotonic() < deadline and proc.poll() is None, "the run ended before storing anything"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    st = store.read(store_dir)
    (new,) = set(st.runs) - old
    assert st.runs[new].missing()  # the torch process was killed, or MLX's never started
    kept = st.rows[st.rows.run_id == new]
    assert len(kept) and (kept.metric == "time_warm").any()  # what finished is readable
    doc = files.generate(store_dir).text
    runs_table = sections(doc)["Runs"]
    assert re.search(rf"`{new}`.*\*\*incomplete\*\*", runs_table)
    # mel at 0.5 s on alpha now comes from the killed run: MLX is missing there, not borrowed from the older run
    alpha = next(s for h, s in sections(doc).items() if h.startswith("Machine `alpha"))
    assert f"missing (run `{new}` incomplete)" in alpha
    older_mlx = st.rows[
        (st.rows.run_id.isin(old))
        & (st.rows.machine_id.str.startswith("alpha"))
        & (st.rows.backend == "mlx")
        & (st.rows.metric == "time_warm")
    ]
    assert fmt.fmt_time(float(np.median(older_mlx.value))) not in alpha.split("### Mel")[1].split("###")[0]


def test_tiny_model_runs_stay_out_of_full_size_tables(two_machines, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(two_machines / "store", store_dir)
    alpha = next(m for m in store.read(store_dir).rows.machine_id.unique() if m.startswith("alpha"))
    full = store.Run(machine_id=alpha, model_size="full", meta={"machine": {"cpu": "test"}})
    for backend, t in (("torch", 7.25), ("mlx", 9.75)):  # distinctive values to find in the text
        add_times(full, [t] * 3, stage="mel", variant="log-mel-128", backend=backend, audio_seconds=0.5)
        full.flush(store_dir, f"full-{backend}")
    doc = files.generate(store_dir).text
    secs = sections(doc)
    full_sec = next(s for h, s in secs.items() if h.startswith(f"Machine `{alpha}`") and "full-size" in h)
    tiny_sec = next(s for h, s in secs.items() if h.startswith(f"Machine `{alpha}`") and "tiny" in h)
    tiny = store.read(store_dir).rows
    tiny = tiny[(tiny.machine_id == alpha) & (tiny.model_size == "tiny") & (tiny.metric == "time_warm")]
    tiny_medians = [fmt.fmt_time(float(np.median(g.value))) for _, g in tiny.groupby("backend")]
    assert "7.25 s" in full_sec and "9.75 s" in full_sec
    assert not any(m in full_sec for m in tiny_medians) and all(m in tiny_sec for m in tiny_medians)
    assert "7.25 s" not in tiny_sec
    assert list(secs).index(next(h for h in secs if "full-size" in h)) < list(secs).index(
        next(h for h in secs if "tiny" in h)
    )  # full-size sections first
