"""The run store: one small parquet file per benchmark, written atomically as the benchmark finishes, in hive-style
folders, so that a killed run keeps everything that finished and the whole store reads as one table with plain tools
(`pandas.read_parquet("reports/store")`, `pyarrow.dataset`, DuckDB's `read_parquet(..., hive_partitioning=true)`).

    reports/store/machine=<machine id>/run=<run id>/
        _run.json                 the plan of a run started by `rvc-bench run` (backends, stages, lengths, options)
        _part-<backends>.json     one per benchmark process: machine facts, options, the benchmarks it will run,
                                  and, once it ends, their outcomes (absent outcomes = the process did not finish)
        <benchmark test>.parquet  the rows of one benchmark; run and backend metadata in the schema (META_KEY)

Files starting with "_" are skipped by pyarrow's dataset reader, so they never get in the way of the table.

Row schema (one measured value per row):
  machine_id, run_id, started_at (UTC ISO 8601), git_commit, git_dirty, model_size, test (pytest node id), stage,
  variant, backend, device, device_name, dtype, audio_seconds, metric, round (0.. for per-round timings, -1
  otherwise), value, unit, reference (what a parity value was computed against; "" otherwise), bound, bound_op
  ("<=" or ">="), within_bound (parity rows with a bound in the tolerance table; null otherwise), and the live
  mode's block_time, crossfade_time, extra_time (s; stage "stream" rows, NaN otherwise; older files read as NaN).
Metrics: time_cold (s; first call after loading, compilation included), time_warm (s; one row per round),
mem_framework_peak (bytes; the framework's own counter, see the backend description for its source),
rss_peak_delta (bytes; process high-water mark minus RSS before the call), rss_fresh_process (bytes; peak RSS of a
fresh process that imports, loads and calls once), time_cold_fresh_process (s), parity.<name> (see
rvc_bench.parity and references/parity_tolerances.csv); stream rows: stream.<figure> (stream.StreamResult.figures).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rvc_bench.fileio import atomic_write_bytes

STREAM_COLUMNS = ("block_time", "crossfade_time", "extra_time")  # added later: a file without them reads as NaN
COLUMNS = {
    "machine_id": "string",
    "run_id": "string",
    "started_at": "string",
    "git_commit": "string",
    "git_dirty": "bool",
    "model_size": "string",
    "test": "string",
    "stage": "string",
    "variant": "string",
    "backend": "string",
    "device": "string",
    "device_name": "string",
    "dtype": "string",
    "audio_seconds": "float64",
    "metric": "string",
    "round": "int64",
    "value": "float64",
    "unit": "string",
    "reference": "string",
    "bound": "float64",
    "bound_op": "string",
    "within_bound": "boolean",
    **dict.fromkeys(STREAM_COLUMNS, "float64"),
}
SCHEMA = pa.schema(
    [
        (
            name,
            {
                "string": pa.string(),
                "bool": pa.bool_(),
                "boolean": pa.bool_(),
                "float64": pa.float64(),
                "int64": pa.int64(),
            }[kind],
        )
        for name, kind in COLUMNS.items()
    ]
)
META_KEY = b"rvc_bench.run"
RUN_PLAN = "_run.json"


class StoreError(RuntimeError):
    pass


def git_state(cwd: Path | None = None) -> tuple[str, bool]:
    """(commit sha, dirty flag) of the checkout, or ("unknown", False) outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown", False
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip(), bool(status.stdout.strip())
    except OSError:
        return "unknown", False


def utc_now() -> str:
    """The time now in UTC ISO 8601, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> tuple[str, str]:
    """(run id, start time in UTC ISO 8601)."""
    return uuid.uuid4().hex[:12], utc_now()


def run_dir(store_dir: str | Path, machine_id: str, run_id: str) -> Path:
    return Path(store_dir) / f"machine={machine_id}" / f"run={run_id}"


def file_name(test: str) -> str:
    """A readable file name for a pytest node id (unique within a run)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", test.split("/")[-1]).strip("-")


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


@dataclass
class Run:
    """One run's identity and its rows not yet written. `flush` writes the buffered rows of one benchmark."""

    machine_id: str = "unknown"
    model_size: str = ""
    meta: dict = field(default_factory=dict)  # machine facts, options: stored with every file of the run
    run_id: str = ""
    started_at: str = ""
    git_commit: str = "unknown"
    git_dirty: bool = False
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if not self.run_id:
            self.run_id, self.started_at = new_run_id()

    def add(
        self,
        *,
        stage: str,
        variant: str,
        backend: str,
        device: str,
        device_name: str,
        dtype: str,
        audio_seconds: float,
        metric: str,
        value: float,
        unit: str,
        round: int = -1,
        reference: str = "",
        test: str = "",
        bound: float = float("nan"),
        bound_op: str = "",
        within_bound: bool | None = None,
        **settings: float,  # STREAM_COLUMNS
    ) -> None:
        if set(settings) - set(STREAM_COLUMNS):
            raise TypeError(f"unknown row settings: {sorted(set(settings) - set(STREAM_COLUMNS))}")
        row = {k: getattr(self, k) for k in ("machine_id", "run_id", "started_at", "git_commit", "git_dirty")}
        row |= dict(model_size=self.model_size, test=test, stage=stage, variant=variant, backend=backend)
        row |= dict(device=device, device_name=device_name, dtype=dtype, metric=metric, unit=unit)
        row |= dict(audio_seconds=float(audio_seconds), round=int(round), value=float(value), bound=float(bound))
        row |= dict(reference=reference, bound_op=bound_op, within_bound=within_bound)
        self.rows.append(row | {k: float(settings.get(k, "nan")) for k in STREAM_COLUMNS})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(COLUMNS)).astype(COLUMNS)

    @property
    def identity(self) -> dict:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "machine_id": self.machine_id,
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
            "model_size": self.model_size,
        }

    def flush(self, store_dir: str | Path, name: str, extra_meta: dict | None = None) -> Path:
        """Write the buffered rows as one file `<name>.parquet` of this run (atomically) and clear the buffer."""
        if not self.rows:
            raise StoreError("refusing to write a benchmark with no rows")
        table = pa.Table.from_pandas(self.frame(), schema=SCHEMA, preserve_index=False)
        meta = {**self.meta, **(extra_meta or {}), **self.identity}
        table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        path = run_dir(store_dir, self.machine_id, self.run_id) / f"{file_name(name)}.parquet"
        atomic_write_bytes(path, buf.getvalue())
        self.rows = []
        return path

    def write_part(self, store_dir: str | Path, part: str, tests: list[str], outcomes: dict | None = None) -> Path:
        """What one process of the run will measure (written before it starts) and how each test ended (after; the
        time it was written then is when the process finished)."""
        path = run_dir(store_dir, self.machine_id, self.run_id) / f"_part-{file_name(part)}.json"
        _write_json(
            path,
            {**self.meta, **self.identity, "part": part, "tests": tests, "outcomes": outcomes, "written_at": utc_now()},
        )
        return path


def write_run_plan(store_dir: str | Path, machine_id: str, run_id: str, started_at: str, plan: dict) -> Path:
    """The whole run's plan, written by `rvc-bench run` before its first process starts."""
    path = run_dir(store_dir, machine_id, run_id) / RUN_PLAN
    _write_json(path, {"run_id": run_id, "started_at": started_at, "machine_id": machine_id, **plan})
    return path


def discard_if_empty(store_dir: str | Path, machine_id: str, run_id: str, store_too: bool = False) -> bool:
    """Remove a run that stored no benchmark (only its plan files) and its folders when empty (the store folder
    too if `store_too`); True if removed."""
    folder = run_dir(store_dir, machine_id, run_id)
    if not folder.is_dir() or any(folder.glob("*.parquet")):
        return False
    for path in folder.glob("_*.json"):
        path.unlink()
    for d in (folder, folder.parent) + ((Path(store_dir),) if store_too else ()):
        try:
            d.rmdir()  # only when empty
        except OSError:
            break
    return True


# ---------------------------------------------------------------------------------------------------------------
# Reading


@dataclass
class RunInfo:
    """What the store knows about one run besides its rows."""

    run_id: str
    machine_id: str
    started_at: str
    meta: dict = field(default_factory=dict)  # machine facts and options (from the first file read)
    backends: dict = field(default_factory=dict)  # backend label -> description
    plan: dict | None = None  # _run.json
    parts: dict = field(default_factory=dict)  # part name -> _part json
    stored_tests: set = field(default_factory=set)

    @property
    def planned_backends(self) -> list[str]:
        if self.plan and self.plan.get("backends"):
            return list(self.plan["backends"])
        return sorted({b for p in self.parts for b in p.split("+")})

    def wall_seconds(self) -> float | None:
        """From the run's start to the end of its last process, when every process finished (None otherwise, or
        for stores written before parts recorded their time)."""
        ends = [p.get("written_at") for p in self.parts.values() if p.get("outcomes") is not None]
        if not ends or None in ends or len(ends) < len(self.parts) or self.missing():
            return None
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return (datetime.strptime(max(ends), fmt) - datetime.strptime(self.started_at, fmt)).total_seconds()

    def missing(self) -> list[str]:
        """Why the run is incomplete, one line each; [] when every planned benchmark is stored."""
        why = []
        if self.plan:
            started = {b for p in self.parts for b in p.split("+")}
            why += [f"{b} never started" for b in self.plan.get("backends", []) if b not in started]
        for name, part in sorted(self.parts.items()):
            outcomes = part.get("outcomes")
            lost = [t for t in part.get("tests", []) if t not in self.stored_tests]
            if outcomes is None:
                why.append(
                    f"the {name} process did not finish ({len(part.get('tests', [])) - len(lost)} of "
                    f"{len(part.get('tests', []))} benchmarks stored)"
                )
            else:
                why += [
                    f"{t.split('::')[-1]}: {outcomes.get(t, 'not run')}" for t in lost if outcomes.get(t) != "skipped"
                ]
        return why


@dataclass
class Store:
    rows: pd.DataFrame
    runs: dict[str, RunInfo]  # run_id -> what is known about it
    problems: list[str]  # unreadable files, by name


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COLUMNS)).astype(COLUMNS)


def read(store_dir: str | Path) -> Store:
    """Read every benchmark file and plan; an unreadable file is reported by name (and warned about), the rest
    still load. Rows come back sorted, so the same store always gives the same table."""
    store_dir = Path(store_dir)
    frames, runs, problems = [], {}, []

    def problem(path: Path, err: Exception) -> None:
        problems.append(
            f"{path.relative_to(store_dir).as_posix()}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        )
        warnings.warn(f"skipping unreadable store file {path}: {err}", stacklevel=3)

    def info(meta: dict) -> RunInfo:
        run = runs.get(meta["run_id"])
        if run is None:
            run = runs[meta["run_id"]] = RunInfo(
                meta["run_id"], meta.get("machine_id", "unknown"), meta.get("started_at", "")
            )
        return run

    for path in sorted(store_dir.glob("*.parquet")):
        problem(path, StoreError("a file outside machine=*/run=* folders (an older store format?): move or delete it"))
    for path in sorted(store_dir.glob("machine=*/run=*/*")):
        if path.name.startswith(".tmp"):
            continue  # a write in progress
        try:
            if path.suffix == ".json":
                meta = json.loads(path.read_text())
                run = info(meta)
                if path.name == RUN_PLAN:
                    run.plan = meta
                else:
                    run.parts[meta["part"]] = meta
                    run.meta = run.meta or {k: meta.get(k) for k in ("machine", "options")}
                continue
            if path.suffix != ".parquet":
                continue
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {})[META_KEY])
            frame = table.to_pandas()
            frame = frame.reindex(columns=[*frame.columns, *(c for c in STREAM_COLUMNS if c not in frame.columns)])
            missing = set(COLUMNS) - set(frame.columns)
            if missing:
                raise StoreError(f"missing columns {sorted(missing)}")
            frame = frame[list(COLUMNS)].astype(COLUMNS)
            meta["run_id"] = str(meta["run_id"])
        except Exception as err:  # any unreadable file must not hide the others
            problem(path, err)
            continue
        frames.append(frame)
        run = info(meta)
        run.meta = run.meta or {k: meta.get(k) for k in ("machine", "options")}
        if meta.get("backend"):
            run.backends[meta["backend"]["label"]] = meta["backend"]
        run.stored_tests.update(frame["test"].unique())
    rows = pd.concat(frames, ignore_index=True) if frames else _empty()
    order = [
        "machine_id",
        "started_at",
        "run_id",
        "stage",
        "variant",
        "dtype",
        "audio_seconds",
        "backend",
        "device",
        "metric",
        "round",
    ]
    rows = rows.sort_values(order, kind="stable").reset_index(drop=True)
    return Store(rows, runs, problems)
