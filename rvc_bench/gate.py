"""Regression gate: parity bounds on the candidate's stored outputs, and slowdowns against a baseline.

Speed is judged two ways, each only where the comparison is fair:
- absolute times of one benchmark in two runs, only on the same machine (same machine id); `compare_runs` is this
  comparison alone, for two sets of runs measured in the same job (A/B of two commits on one machine);
- relative: each run's own ratio of a backend's time to PyTorch's (formed inside the run, as the report does),
  compared between runs; this survives a change of machine speed between the two runs.
A slowdown counts when it is big (the ratio of medians beyond --max-slowdown) and real (its 95 % bootstrap interval
lies above 1): see rvc_bench.stats. Fewer than 3 rounds on a side cannot be decided and says so (exit status 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rvc_bench import results, stats, tolerances
from rvc_bench import store as run_store
from rvc_bench.backends import REFERENCES

OK, FAIL, UNDECIDED = "ok", "FAIL", "cannot decide"
EXIT = {OK: 0, FAIL: 1, UNDECIDED: 3}
DEFAULT_MAX_SLOWDOWN = 1.15


class GateError(ValueError):
    pass


@dataclass
class Check:
    kind: str  # "store" | "parity" | "time" | "relative"
    subject: str
    detail: str
    status: str  # OK | FAIL | UNDECIDED

    @property
    def ok(self) -> bool:
        return self.status == OK


def exit_status(checks: list[Check]) -> int:
    """1 if anything failed, else 3 if a requested comparison could not be decided, else 0."""
    return max((EXIT[c.status] for c in checks), key=lambda code: (code == 1, code), default=0)


def parity_checks(rows: pd.DataFrame) -> list[Check]:
    """Every stored parity value against today's tolerance table (check "benchmark"). A value computed against
    another variant of the same backend (reference "mlx whole": the chunking variants) keeps the bound stored with
    it, of its own check, or none (measured only: a variant kept to show what it costs)."""
    checks = []
    par = results.parity(rows)
    for r in par.sort_values(["machine_id", "stage", "variant", "audio_seconds", "backend", "metric"]).itertuples():
        subject = f"{r.stage}/{r.variant} {r.backend}({r.device}) {r.audio_seconds:g}s [{r.model_size}, run {r.run_id}]"
        if results.same_backend_reference(r.reference):
            if results.finite(r.bound):
                checks.append(Check("parity", subject, f"{r.metric} = {r.value:.3g} (bound {r.metric} {r.bound_op} "
                                    f"{r.bound:g} vs {r.reference})", OK if r.within_bound else FAIL))
            continue
        b = tolerances.bounds(r.stage, tolerances.BENCHMARK, r.backend).get(r.metric)
        if b is None:
            continue
        checks.append(Check("parity", subject, f"{r.metric} = {r.value:.3g} (bound {b})",
                            OK if b.holds(r.value) else FAIL))
    return checks


def _decision_check(kind: str, subject: str, d: stats.Decision) -> Check:
    status = UNDECIDED if d.verdict == "cannot decide" else (FAIL if d.slower else OK)
    return Check(kind, subject, str(d), status)


def _subject(key: dict) -> str:
    return (f"{key['stage']}/{key['variant']} {key['backend']}({key['device']}) {key['audio_seconds']:g}s "
            f"[{key['model_size']}]")


def compare_runs(base: pd.DataFrame, head: pd.DataFrame, max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> list[Check]:
    """Absolute warm times of every benchmark both sets measured on the same machine: did head get slower?
    Reference implementations (the float64 numpy log-mel) are timed for the document, not gated: they are no
    backend a port ships, and their millisecond times on a shared CPU only add false alarms.
    A side of several runs (base and head each measured k times, interleaved, in one job) counts each run as
    one sample of the run-to-run spread (stats: cluster bootstrap), which one run per side cannot show."""
    key = ["machine_id", "model_size"] + results.MEASUREMENT + ["backend", "device"]

    def samples(rows: pd.DataFrame) -> dict:
        warm = rows[(rows.metric == "time_warm") & ~rows.backend.isin(REFERENCES)].sort_values(["run_id", "round"])
        return {k: [r.value.to_numpy() for _, r in g.groupby("run_id")] for k, g in warm.groupby(key, sort=True)}

    old, new = samples(base), samples(head)
    return [_decision_check("time", _subject(dict(zip(key, k))), stats.compare(old[k], new[k], max_slowdown))
            for k in sorted(set(old) & set(new))]


def relative_checks(base: pd.DataFrame, head: pd.DataFrame,
                    max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> list[Check]:
    """Each run's backend/PyTorch time ratio (formed inside one run) compared between base and head: with one run
    a side, bootstrapped over both runs' rounds; with several, each run's ratio is one sample."""
    def ratios(rows: pd.DataFrame) -> dict:
        out = {}
        timed = results.lines(rows)
        timed = timed[timed.rounds > 0]  # a length timed once (first call only) has no warm rounds to compare
        for k, g in timed.groupby(["model_size", "run_id"] + results.MEASUREMENT, sort=True):
            ref = g[g.backend == results.REFERENCE_BACKEND]
            if len(ref) == 1:
                for r in g[(g.backend != results.REFERENCE_BACKEND) & ~g.backend.isin(REFERENCES)].itertuples():
                    out.setdefault((k[0], *k[2:], r.backend, r.device), []).append((r.times, ref.times.iloc[0]))
        return out

    old, new = ratios(base), ratios(head)
    checks = []
    for k in sorted(set(old) & set(new)):
        if len(old[k]) == len(new[k]) == 1:
            d = stats.compare_relative(*old[k][0], *new[k][0], max_slowdown)
        else:
            per_run = [[np.median(t) / np.median(ref) for t, ref in side] for side in (old[k], new[k])]
            d = stats.compare(*per_run, max_slowdown)
        subject = dict(zip(["model_size"] + results.MEASUREMENT + ["backend", "device"], k))
        checks.append(_decision_check("relative", _subject(subject) + f" / {results.REFERENCE_BACKEND}", d))
    return checks


def select(store_dir, run_id: str | None) -> pd.DataFrame:
    """The rows to judge: one run (by id prefix), or the newest run of every measurement on every machine. An
    unreadable store file is an error: it may be the newest run, and judging an older one instead would pass a
    build nobody checked."""
    st = run_store.read(store_dir)
    if st.problems:
        raise GateError(f"unreadable store file in {store_dir}: {st.problems[0]} (fix or remove it; the gate will "
                        "not judge the store around it)")
    if st.rows.empty:
        raise GateError(f"no readable runs in {store_dir}")
    if run_id is None:
        return results.newest_rows(st.rows), st.problems
    ids = sorted(i for i in st.rows.run_id.unique() if i.startswith(run_id))
    if len(ids) != 1:
        raise GateError(f"run id {run_id!r} matches {len(ids)} runs in {store_dir}"
                        + (f": {', '.join(ids)}" if ids else ""))
    return st.rows[st.rows.run_id == ids[0]], st.problems


def evaluate(candidate: pd.DataFrame, baseline: pd.DataFrame | None, max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
             problems: list[str] = ()) -> list[Check]:
    checks = [Check("store", p, "unreadable store file: nothing in it was judged", FAIL) for p in problems]
    checks += parity_checks(candidate)
    if baseline is not None:
        checks += compare_runs(baseline, candidate, max_slowdown) + relative_checks(baseline, candidate, max_slowdown)
    return checks


def render(checks: list[Check], max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> str:
    if not checks:
        return "no checks applied (no bounded parity rows and no comparable timings)\n"
    df = pd.DataFrame([{"": c.status, "check": c.kind, "subject": c.subject, "detail": c.detail} for c in checks])
    rule = ""
    if any(c.kind in ("time", "relative") for c in checks):
        rule = (f"\nspeed: x = new / old ratio of medians; slower = above x{max_slowdown:g} with its "
                f"{stats.LEVEL:.0%} bootstrap interval above 1\n")
    return df.to_markdown(index=False) + "\n" + rule
