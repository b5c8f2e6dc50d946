"""Parity bounds from references/parity_tolerances.csv: the single table the suites, the `bench` fixture and the
gate read. A bound is looked up by (stage, check, metric); check "benchmark" applies to every stored benchmark. A row
naming a backend replaces the row without one for that backend only (a kernel measured to be less exact there)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass

from rvc_bench.resources import reference

FILE = "parity_tolerances.csv"
BENCHMARK = "benchmark"
OPS = ("<=", ">=")


class ToleranceError(ValueError):
    pass


@dataclass(frozen=True)
class Bound:
    stage: str
    check: str
    metric: str
    op: str  # "<=": value must not exceed the bound; ">=": value must reach it
    bound: float
    why: str
    backend: str = ""  # "": every backend

    def holds(self, value: float) -> bool:
        """NaN never holds (a metric that could not be computed proves nothing); +inf SNR of identical outputs does."""
        if math.isnan(value):
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


class Table(Mapping):
    """A tolerance table: its bounds by (stage, check, metric, backend), and every lookup a check makes. This
    package's table is `table()`; `rvc-bench ab` judges with head's, made from that commit's text by `parse`."""

    def __init__(self, rows: dict[tuple[str, str, str, str], Bound]):
        self._rows = dict(rows)

    def __getitem__(self, key: tuple[str, str, str, str]) -> Bound:
        return self._rows[key]

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def bounds(self, stage: str, check: str = BENCHMARK, backend: str = "") -> dict[str, Bound]:
        """The bounds of one stage's check for `backend`, by metric name: its own rows where it has them, else the
        rows for every backend."""
        rows = [b for (s, c, _, be), b in self._rows.items() if s == stage and c == check and be in ("", backend)]
        return {b.metric: b for b in sorted(rows, key=lambda b: b.backend != "")}  # a backend's own row comes last

    def broken(
        self, stage: str, check: str, metrics: dict[str, float], only: tuple[str, ...] | None = None, backend: str = ""
    ) -> list[str]:
        """The bounds of (stage, check) that `metrics` breaks on `backend`, one line each (a bounded metric that is
        missing from `metrics` counts as broken: nothing unmeasured passes). `only` restricts the check to some
        metrics, for a test that compares one part of a stage's output (e.g. RMVPE's salience without its f0)."""
        out = []
        for name, b in self.bounds(stage, check, backend).items():
            if only is not None and name not in only:
                continue
            if name not in metrics:
                out.append(f"{name} missing (bound {b})")
            elif not b.holds(metrics[name]):
                out.append(f"{name} = {metrics[name]:.3g} (bound {b})")
        return out

    def assert_within(
        self, stage: str, check: str, metrics: dict[str, float], only: tuple[str, ...] | None = None, backend: str = ""
    ) -> dict[str, float]:
        """A suite's parity assertion: every bound of (stage, check) (or of its `only` metrics) on `backend` holds;
        returns the metrics."""
        if not [m for m in self.bounds(stage, check, backend) if only is None or m in only]:
            raise ToleranceError(f"no bounds for {stage}/{check} ({only or 'any metric'}) in references/{FILE}")
        bad = self.broken(stage, check, metrics, only, backend)
        assert not bad, f"{stage}/{check} parity: " + "; ".join(bad) + f" (all: {metrics})"
        return metrics

    def bound(self, stage: str, check: str, metric: str) -> float:
        """One bound's value, for a suite's assertion; a missing row is an error naming it."""
        try:
            return self._rows[(stage, check, metric, "")].bound
        except KeyError:
            raise ToleranceError(f"no bound for {stage}/{check}/{metric} in references/{FILE}") from None


def parse(text: str) -> Table:
    """A tolerance table's text (this package's, or another commit's for `rvc-bench ab`)."""
    rows = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
    out = {}
    for i, r in enumerate(rows, start=2):
        try:
            b = Bound(r["stage"], r["check"], r["metric"], r["op"], float(r["bound"]), r["why"], r["backend"])
        except (KeyError, TypeError, ValueError) as err:
            raise ToleranceError(f"{FILE} data row {i}: {err}") from None
        if b.op not in OPS:
            raise ToleranceError(f"{FILE} data row {i}: op must be one of {OPS}, got {b.op!r}")
        key = (b.stage, b.check, b.metric, b.backend)
        if key in out:
            raise ToleranceError(f"{FILE}: {key} appears twice")
        out[key] = b
    return Table(out)


PACKAGE_TABLE = parse(reference(FILE).read_text(encoding="utf-8"))  # this package's own table, read once on import


def table() -> Table:
    """This package's table (references/parity_tolerances.csv)."""
    return PACKAGE_TABLE


# The package table's lookups, for the suites and tests that check against it.


def bounds(stage: str, check: str = BENCHMARK, backend: str = "") -> dict[str, Bound]:
    return table().bounds(stage, check, backend)


def broken(
    stage: str, check: str, metrics: dict[str, float], only: tuple[str, ...] | None = None, backend: str = ""
) -> list[str]:
    return table().broken(stage, check, metrics, only, backend)


def assert_within(
    stage: str, check: str, metrics: dict[str, float], only: tuple[str, ...] | None = None, backend: str = ""
) -> dict[str, float]:
    return table().assert_within(stage, check, metrics, only, backend)


def bound(stage: str, check: str, metric: str) -> float:
    return table().bound(stage, check, metric)
