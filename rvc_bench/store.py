"""The parquet run store under reports/store/: one file per run (or per process of a run), tidy rows, run
metadata in each file's schema.

Row schema (one measured value per row):
  run_id, started_at (UTC ISO 8601), git_commit, git_dirty, stage, variant, backend, device, device_name, dtype,
  audio_seconds, metric, round (0.. for per-round timings, -1 otherwise), value, unit, reference (the output a
  parity value was computed against; "" for non-parity rows).
Metrics: time_cold (s; first call after loading, compilation included), time_warm (s; one row per round),
mem_framework_peak (bytes; the framework's own counter, see the run metadata for its source), rss_peak_delta
(bytes; process high-water mark minus RSS before the call), rss_fresh_process (bytes; peak RSS of a fresh process
that imports, loads and calls once), time_cold_fresh_process (s), parity.<name> (unitless, see rvc_bench.parity).
Run metadata (JSON under the schema key "rvc_bench.run"): machine, backends (device descriptions), options.
"""

from __future__ import annotations

import io
import json
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

COLUMNS = {
    "run_id": "string", "started_at": "string", "git_commit": "string", "git_dirty": "bool", "stage": "string",
    "variant": "string", "backend": "string", "device": "string", "device_name": "string", "dtype": "string",
    "audio_seconds": "float64", "metric": "string", "round": "int64", "value": "float64", "unit": "string",
    "reference": "string",
}
META_KEY = b"rvc_bench.run"


class StoreError(RuntimeError):
    pass


def git_state(cwd: Path | None = None) -> tuple[str, bool]:
    """(commit sha, dirty flag) of the checkout, or ("unknown", False) outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown", False
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
        return sha.stdout.strip(), bool(status.stdout.strip())
    except OSError:
        return "unknown", False


@dataclass
class Run:
    """Rows of one run, buffered in memory and written once, atomically, at the end."""

    meta: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    part: str = "all"  # one run may be written by several processes (one per backend), one file each

    def __post_init__(self):
        self.git_commit, self.git_dirty = git_state()

    def add(self, *, stage: str, variant: str, backend: str, device: str, device_name: str, dtype: str,
            audio_seconds: float, metric: str, value: float, unit: str, round: int = -1, reference: str = "") -> None:
        self.rows.append(dict(run_id=self.run_id, started_at=self.started_at, git_commit=self.git_commit,
                              git_dirty=self.git_dirty, stage=stage, variant=variant, backend=backend, device=device,
                              device_name=device_name, dtype=dtype, audio_seconds=float(audio_seconds), metric=metric,
                              round=int(round), value=float(value), unit=unit, reference=reference))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(COLUMNS)).astype(COLUMNS)

    def write(self, store_dir: str | Path) -> Path:
        if not self.rows:
            raise StoreError("refusing to write a run with no rows")
        table = pa.Table.from_pandas(self.frame(), preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[META_KEY] = json.dumps({"run_id": self.run_id, "started_at": self.started_at,
                                     "git_commit": self.git_commit, "git_dirty": self.git_dirty, **self.meta},
                                    sort_keys=True, default=str).encode()
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), buf)
        stamp = self.started_at.replace(":", "").replace("-", "")
        path = Path(store_dir) / f"run-{stamp}-{self.run_id}-{self.part}.parquet"
        atomic_write_bytes(path, buf.getvalue())
        return path


@dataclass
class Store:
    rows: pd.DataFrame
    runs: dict[str, dict]  # run_id -> metadata
    problems: list[str]  # unreadable files, by name


def read(store_dir: str | Path) -> Store:
    """Read every run file; a corrupt one is reported by name (and warned about) and the others still load."""
    store_dir = Path(store_dir)
    frames, runs, problems = [], {}, []
    for path in sorted(store_dir.glob("run-*.parquet")):
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {})[META_KEY])
            frame = table.to_pandas()
            missing = set(COLUMNS) - set(frame.columns)
            if missing:
                raise ValueError(f"missing columns {sorted(missing)}")
            frame = frame[list(COLUMNS)].astype(COLUMNS)
            run_id = str(meta["run_id"])
        except Exception as err:  # any unreadable file must not hide the others
            problems.append(f"{path.name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            warnings.warn(f"skipping unreadable run file {path}: {err}", stacklevel=2)
            continue
        frames.append(frame)
        if run_id in runs:  # another part of the same run: merge the backend descriptions
            runs[run_id].setdefault("backends", {}).update(meta.get("backends", {}))
        else:
            runs[run_id] = meta
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS)).astype(COLUMNS)
    return Store(rows, runs, problems)
