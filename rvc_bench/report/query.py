"""The data behind one section of the document (one machine, one model size), and the one selector every table
reads it through: `select(frame, stage=..., variant=..., audio_seconds=..., backend=..., device=...)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from rvc_bench import results, variants
from rvc_bench import store as run_store
from rvc_bench.names import REFERENCES
from rvc_bench.report.formatting import describe_machine, fmt_line, fmt_ratio, runs_text

GRID = (5.0, 60.0, 300.0)  # the original document's lengths


def select(frame: pd.DataFrame, **equal) -> pd.DataFrame:
    """The rows of `frame` whose columns equal the given values; a value of None selects any."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in equal.items():
        if value is not None:
            mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def pub(p: pd.DataFrame, table_name: str, stage: str, backend: str, metric: str = "time", seconds=None) -> str:
    """A published figure as printed in the original document (references/original_benchmarks.csv)."""
    hit = select(p, table=table_name, stage=stage, backend=backend, metric=metric, audio_seconds=seconds)
    return "; ".join(hit.shown) if len(hit) else "–"


def chunking_variant(variant: str) -> bool:
    """A variant measured for the chunking table ("chunked-*", "whole", "*-whole"), beside a stage's main one."""
    return variant.startswith("chunked") or variant.endswith("whole")


@dataclass
class Section:
    machine_id: str
    model_size: str
    lines: pd.DataFrame  # results.lines of the newest run per measurement
    rows: pd.DataFrame  # the stored rows of those same runs and measurements
    runs: dict  # run_id -> RunInfo
    every: pd.DataFrame  # results.lines of every run of this machine and model size (for ratios inside a run)
    speed: pd.DataFrame = field(init=False)

    def __post_init__(self):
        self.speed = results.speedups(self.lines)

    @cached_property
    def parity(self) -> pd.DataFrame:
        return results.parity(self.rows)

    @property
    def full(self) -> bool:
        """Published figures and the original's length grid only make sense beside full-size models."""
        return self.model_size == "full"

    @property
    def slug(self) -> str:
        return f"{self.machine_id}-{self.model_size}"

    @property
    def machine(self) -> dict:
        for run_id in results.runs_of(self.lines):
            if self.runs[run_id].meta.get("machine"):
                return self.runs[run_id].meta["machine"]
        return {}

    @property
    def title(self) -> str:
        size = (
            "full-size models"
            if self.model_size == "full"
            else f"{self.model_size} models (a smoke test: not comparable with full-size numbers)"
        )
        return f"Machine `{self.machine_id}`: {describe_machine(self.machine)} — {size}"

    def columns(self) -> list[tuple[str, str]]:
        """(backend, device) pairs measured in this section (not the numpy references), PyTorch first; a backend
        its runs planned but never stored gets a column too (device "–"), so that its absence shows."""
        measured = self.lines[~self.lines.backend.isin(REFERENCES)]
        pairs = set(measured[["backend", "device"]].drop_duplicates().itertuples(index=False, name=None))
        measured = {b for b, _ in pairs}
        for run_id in results.runs_of(self.lines):
            pairs |= {(b, "–") for b in self.runs[run_id].planned_backends if b not in measured}
        return sorted(pairs, key=lambda p: (p[0] != results.REFERENCE_BACKEND, p[0], p[1]))

    def others(self) -> list[tuple[str, str]]:
        """The columns that have a speedup: every backend but the reference."""
        return [c for c in self.columns() if c[0] != results.REFERENCE_BACKEND]

    def stage_lines(self, stage: str, variant: str | None = None) -> pd.DataFrame:
        return select(self.lines, stage=stage, variant=variant)

    def main_variant(self, stage: str) -> str | None:
        """The variant a stage's tables show: the plain one (not a chunking variant) measured at the most lengths,
        and of those the one measured most recently (a renamed variant's older rows stay in the store)."""
        s = self.stage_lines(stage)
        s = s[[not chunking_variant(v) and variants.of_row(v) == variants.FP32 for v in s.variant]]
        if s.empty:
            return None
        counts = s.groupby("variant").audio_seconds.nunique()
        newest = s.groupby("variant").started_at.max()
        return max(counts.index, key=lambda v: (counts[v], newest[v], v))

    def lengths(self, stage: str, variant: str | None, grid: tuple = GRID) -> list[float]:
        measured = set(self.stage_lines(stage, variant).audio_seconds) if variant else set()
        return sorted((set(grid) if self.full else set()) | measured)

    # One measurement (stage, variant, length) on one column (backend, device)

    def cell(self, stage: str, variant: str, seconds: float, backend: str, device: str) -> pd.Series | None:
        hit = select(self.lines, stage=stage, variant=variant, audio_seconds=seconds, backend=backend, device=device)
        return hit.iloc[0] if len(hit) else None

    def missing_text(self, stage: str, variant: str, seconds: float, backend: str) -> str:
        """Why a cell is empty: its run did not store it (incomplete) or never planned it."""
        s = select(self.lines, stage=stage, variant=variant, audio_seconds=seconds)
        if s.empty:
            return "not measured"
        run = self.runs[s.run_id.iloc[0]]
        other = s[s.backend == backend]
        if len(other):
            return f"measured on {', '.join(sorted(other.device))} only"
        if backend in run.planned_backends and run.missing():
            return f"missing (run `{run.run_id}` incomplete)"
        return "not measured"

    def time_cell(self, stage, variant, seconds, backend, device, iqr: bool = True) -> str:
        c = self.cell(stage, variant, seconds, backend, device)
        if c is None:
            return self.missing_text(stage, variant, seconds, backend)
        return fmt_line(c, iqr)

    def speed_cell(self, stage, variant, seconds, backend, device) -> str:
        hit = select(self.speed, stage=stage, variant=variant, audio_seconds=seconds, backend=backend, device=device)
        if hit.empty:
            return "–"
        r = hit.iloc[0]
        return fmt_ratio(r.speedup, r.lo, r.hi, (r.ref_calls, r.calls))

    def run_cell(self, stage, variant, seconds) -> str:
        runs = select(self.lines, stage=stage, variant=variant, audio_seconds=seconds).run_id.unique()
        return runs_text(sorted(runs)) or "–"

    def parity_of(self, stage, variant, seconds, backend=None, device=None) -> pd.DataFrame:
        return select(self.parity, stage=stage, variant=variant, audio_seconds=seconds, backend=backend, device=device)


def sections_of(st: run_store.Store) -> list[Section]:
    rows = results.newest_rows(st.rows)
    lines, every = results.lines(rows), results.lines(st.rows)
    out = []
    for (machine_id, size), g in lines.groupby(results.SECTION, sort=False):
        r = select(rows, machine_id=machine_id, model_size=size)
        e = select(every, machine_id=machine_id, model_size=size).reset_index(drop=True)
        out.append(Section(machine_id, size, g.reset_index(drop=True), r, st.runs, e))
    return sorted(out, key=lambda s: (s.model_size != "full", s.model_size, s.machine_id))
