"""What several test modules share: the CLI in a child process, the benchmarks document by section, and hand-made
run-store rows (not measurements) for the tests of the report, the gate, the store and the CLI."""

from __future__ import annotations

import re
import subprocess
import sys

from rvc_bench import store


def rvc(*args, **kw) -> subprocess.CompletedProcess:
    """`rvc-bench ARGS` in a child process, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "rvc_bench.cli", *map(str, args)], capture_output=True, text=True, **kw
    )


def pytest_child(*args, **kw) -> subprocess.CompletedProcess:
    """`pytest -q ARGS` in a child process (no cache written), its output captured as text."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def infer_synthetic(voice, src, out, backend: str, *rest) -> int:
    """`rvc-bench infer` in this process, tiny synthetic HuBERT and RMVPE, seed 1: its exit status."""
    from rvc_bench import cli

    argv = ["infer", voice, src, "-o", out, "--seed", "1", "--model-size", "tiny", "--synthetic-models"]
    return cli.main([*map(str, argv), "--backend", backend, *map(str, rest)])


def sections(doc: str) -> dict[str, str]:
    """Top-level (##) sections of the document by heading."""
    parts = re.split(r"^## ", doc, flags=re.M)[1:]
    return {p.split("\n", 1)[0]: p for p in parts}


def add_row(run: store.Run, *, stage: str, variant: str, backend: str, audio_seconds: float, **row) -> None:
    """One row of `run`: on the CPU, in float32 and in seconds (time rows) unless `row` says otherwise."""
    row = dict(device="cpu", device_name="cpu", dtype="float32", unit="s") | row
    run.add(stage=stage, variant=variant, backend=backend, audio_seconds=audio_seconds, **row)


def add_times(run: store.Run, times, *, metric: str = "time_warm", **row) -> None:
    """One `metric` row a round, round i taking `times[i]`."""
    for i, t in enumerate(times):
        add_row(run, metric=metric, value=t, round=i, **row)
