"""Regression gate: parity bounds on the candidate's stored outputs, and slowdowns against a baseline.

Speed is judged two ways, each only where the comparison is fair:
- absolute times of one benchmark in two runs, only on the same machine (same machine id); `compare_runs` is this
  comparison alone, for two sets of runs measured in the same job (A/B of two commits on one machine);
- relative: each run's own ratio of a backend's time to PyTorch's (formed inside the run, as the report does),
  compared between runs; this survives a change of machine speed between the two runs.
A slowdown counts when it is big (the ratio of medians beyond --max-slowdown) and real (its 95 % bootstrap interval
lies above 1): see rvc_bench.stats. Fewer than 3 rounds on a side cannot be decided and says so (exit status 3).
`interval=True` (rvc-bench ab --budget-minutes) decides three ways from the interval alone: all of it above the
threshold is a slowdown, all of it below passes, and one that straddles it cannot be decided yet (status 3), which
the A/B job answers by measuring more pairs. `history` (past runs on the machine) gives each absolute time its own
threshold, from its run-to-run changes (stats.history_threshold), where enough of them are stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rvc_bench import results, stats, tolerances, variants
from rvc_bench import store as run_store
from rvc_bench.names import REFERENCES

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
    # parity checks: (stage, backend, device, model size, seconds) of the measurement, for `rvc-bench diff`
    measured: tuple | None = None
    repeatable: bool = False  # undecided for want of samples: more runs may decide it

    @property
    def ok(self) -> bool:
        return self.status == OK


def store_checks(problems: list[str]) -> list[Check]:
    return [Check("store", p, "unreadable store file: nothing in it was judged", FAIL) for p in problems]


def exit_status(checks: list[Check]) -> int:
    """1 if anything failed, else 3 if a requested comparison could not be decided, else 0."""
    return max((EXIT[c.status] for c in checks), key=lambda code: (code == 1, code), default=0)


def parity_checks(rows: pd.DataFrame, table: tolerances.Table | None = None) -> list[Check]:
    """Every stored parity value against a tolerance table (check "benchmark"; default: this package's). A value
    computed against another variant of the same backend (reference "mlx whole": the chunking variants) keeps the
    bound stored with it, of its own check, or none (measured only: a variant kept to show what it costs)."""
    table = tolerances.table() if table is None else table
    checks = []
    par = results.parity(rows)
    for r in par.sort_values(["machine_id", "stage", "variant", "audio_seconds", "backend", "metric"]).itertuples():
        subject = f"{r.stage}/{r.variant} {r.backend}({r.device}) {r.audio_seconds:g}s [{r.model_size}, run {r.run_id}]"
        if results.same_backend_reference(r.reference):
            if results.finite(r.bound):
                checks.append(
                    Check(
                        "parity",
                        subject,
                        f"{r.metric} = {r.value:.3g} (bound {r.metric} {r.bound_op} {r.bound:g} vs {r.reference})",
                        OK if r.within_bound else FAIL,
                    )
                )
            continue
        b = table.bounds(r.stage, variants.check_of(r.variant), r.backend).get(r.metric)
        if b is None:
            continue
        measured = (r.stage, r.backend, r.device, r.model_size, float(r.audio_seconds))
        detail = f"{r.metric} = {r.value:.3g} (bound {b})"
        checks.append(Check("parity", subject, detail, OK if b.holds(r.value) else FAIL, measured))
    return checks


def _decision_check(kind: str, subject: str, d: stats.Decision) -> Check:
    status = UNDECIDED if d.verdict == "cannot decide" else (FAIL if d.slower else OK)
    return Check(kind, subject, str(d), status, repeatable=status == UNDECIDED)


def _subject(key: dict) -> str:
    return (
        f"{key['stage']}/{key['variant']} {key['backend']}({key['device']}) {key['audio_seconds']:g}s "
        f"[{key['model_size']}]"
    )


TIME_KEY = ["machine_id", "model_size"] + results.MEASUREMENT + ["backend", "device"]


def _warm(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows.metric == "time_warm") & ~rows.backend.isin(REFERENCES)]


def history_thresholds(history: pd.DataFrame, max_slowdown: float) -> dict:
    """Key -> an absolute time's own threshold from its past runs' medians in time order (stats.history_threshold),
    for the keys with history enough to have one."""
    medians = _warm(history).groupby(TIME_KEY + ["started_at", "run_id"], sort=True).value.median()
    out = {}
    for k, m in medians.groupby(level=list(range(len(TIME_KEY))), sort=True):
        if len(m) > stats.MIN_HISTORY:
            out[k] = stats.history_threshold(m.to_numpy(), max_slowdown)
    return out


def compare_runs(
    base: pd.DataFrame,
    head: pd.DataFrame,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    interval: bool = False,
    thresholds: dict | None = None,
) -> list[Check]:
    """Absolute warm times of every benchmark both sets measured on the same machine: did head get slower?
    Reference implementations (the float64 numpy log-mel) are timed for the document, not gated: they are no
    backend a port ships, and their millisecond times on a shared CPU only add false alarms.
    A side of several runs (base and head each measured k times, interleaved, in one job) counts each run as
    one sample of the run-to-run spread (stats: cluster bootstrap), which one run per side cannot show.
    thresholds: key -> a benchmark's own threshold (history_thresholds), used instead of max_slowdown."""

    def samples(rows: pd.DataFrame) -> dict:
        warm = _warm(rows).sort_values(["run_id", "round"])
        return {k: [r.value.to_numpy() for _, r in g.groupby("run_id")] for k, g in warm.groupby(TIME_KEY, sort=True)}

    old, new = samples(base), samples(head)
    thresholds = thresholds or {}
    checks = []
    for k in sorted(set(old) & set(new)):
        threshold = thresholds.get(k, max_slowdown)
        check = _decision_check(
            "time", _subject(dict(zip(TIME_KEY, k))), stats.compare(old[k], new[k], threshold, interval)
        )
        if k in thresholds:
            check.detail += f" [threshold x{threshold:.3g} from this machine's history]"
        checks.append(check)
    return checks


def relative_checks(
    base: pd.DataFrame, head: pd.DataFrame, max_slowdown: float = DEFAULT_MAX_SLOWDOWN, interval: bool = False
) -> list[Check]:
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
            d = stats.compare_relative(*old[k][0], *new[k][0], max_slowdown, interval)
        else:
            per_run = [[np.median(t) / np.median(ref) for t, ref in side] for side in (old[k], new[k])]
            d = stats.compare(*per_run, max_slowdown, interval)
        subject = dict(zip(["model_size"] + results.MEASUREMENT + ["backend", "device"], k))
        checks.append(_decision_check("relative", _subject(subject) + f" / {results.REFERENCE_BACKEND}", d))
    return checks


def select(store_dir, run_id: str | None) -> pd.DataFrame:
    """The rows to judge: one run (by id prefix), or the newest run of every measurement on every machine. An
    unreadable store file is an error: it may be the newest run, and judging an older one instead would pass a
    build nobody checked."""
    st = run_store.read(store_dir)
    if st.problems:
        raise GateError(
            f"unreadable store file in {store_dir}: {st.problems[0]} (fix or remove it; the gate will "
            "not judge the store around it)"
        )
    if st.rows.empty:
        raise GateError(f"no readable runs in {store_dir}")
    if run_id is None:
        return results.newest_rows(st.rows), st.problems
    ids = sorted(i for i in st.rows.run_id.unique() if i.startswith(run_id))
    if len(ids) != 1:
        raise GateError(
            f"run id {run_id!r} matches {len(ids)} runs in {store_dir}" + (f": {', '.join(ids)}" if ids else "")
        )
    return st.rows[st.rows.run_id == ids[0]], st.problems


def evaluate(
    candidate: pd.DataFrame,
    baseline: pd.DataFrame | None,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    problems: list[str] = (),
    table: tolerances.Table | None = None,
) -> list[Check]:
    checks = store_checks(problems)
    checks += parity_checks(candidate, table)
    if baseline is not None:
        checks += compare_runs(baseline, candidate, max_slowdown) + relative_checks(baseline, candidate, max_slowdown)
    return checks


def render(checks: list[Check], max_slowdown: float = DEFAULT_MAX_SLOWDOWN, interval: bool = False) -> str:
    if not checks:
        return "no checks applied (no bounded parity rows and no comparable timings)\n"
    df = pd.DataFrame([{"": c.status, "check": c.kind, "subject": c.subject, "detail": c.detail} for c in checks])
    rule = ""
    if any(c.kind in ("time", "relative") for c in checks):
        rule = f"slower = above x{max_slowdown:g} with its {stats.LEVEL:.0%} bootstrap interval above 1"
        if interval:
            rule = (
                f"slower = its whole {stats.LEVEL:.0%} bootstrap interval above x{max_slowdown:g} (or the threshold "
                "shown), no change = all of it below, cannot decide yet = across it"
            )
        rule = f"\nspeed: x = new / old ratio of medians; {rule}\n"
    return df.to_markdown(index=False) + "\n" + rule


# ---------------------------------------------------------------------------------------------------------------
# Two commits measured alternately in one job (`rvc-bench ab`): head against base

SIDES = ("base", "head")


def _worst(values: pd.Series, bound: tolerances.Bound) -> float:
    """The value of a side's runs furthest on the wrong side of the bound (NaN, which never holds, first)."""
    if values.isna().any():
        return float("nan")
    return float(values.max() if bound.op == "<=" else values.min())


def paired_parity_checks(rows: pd.DataFrame, side_of: pd.Series, table: tolerances.Table) -> list[Check]:
    """Parity of both sides against one table (head's): head's worst value over its runs decides, base's is shown."""
    checks = []
    key = ["model_size", "stage", "variant", "backend", "device", "audio_seconds", "metric"]
    for k, g in results.parity(rows).groupby(key, sort=True):
        size, stage, variant, backend, device, seconds, metric = k
        b = table.bounds(stage, variants.check_of(variant), backend).get(metric)
        by_side = {s: g[side_of[g.index] == s].value for s in SIDES}
        if b is None or by_side["head"].empty:
            continue
        worst = {s: _worst(v, b) if len(v) else None for s, v in by_side.items()}
        shown = {s: "not measured" if v is None else f"{v:.3g}" for s, v in worst.items()}
        checks.append(
            Check(
                "parity",
                f"{stage}/{variant} {backend}({device}) {seconds:g}s [{size}] {metric}",
                f"head {shown['head']}, base {shown['base']} (bound {b}; worst of each side's runs)",
                OK if b.holds(worst["head"]) else FAIL,
                (stage, backend, device, size, float(seconds)),
            )
        )
    return checks


def side_checks(
    failures: dict[str, tuple[str, str | None]], outcomes: dict[str, dict[str, list[str]]]
) -> tuple[list[Check], list[str]]:
    """The runs themselves. failures: side -> (its short commit, why it could not be measured or None); outcomes:
    side -> {problem: the run numbers it happened in}. Head's are regressions; base's cannot decide (a side that
    could not be measured) or are notes (a failed benchmark only leaves its comparison undecided)."""
    checks = [
        Check("run", f"{name} {short}", f"could not be measured: {failure}", FAIL if name == "head" else UNDECIDED)
        for name, (short, failure) in failures.items()
        if failure
    ]
    checks += [
        Check("run", f"head runs {', '.join(numbers)}", problem, FAIL)
        for problem, numbers in outcomes.get("head", {}).items()
    ]
    notes = [f"base runs {', '.join(n)}: {p}" for p, n in outcomes.get("base", {}).items()]
    return checks, notes


def _ab_subject(k: tuple) -> str:
    size, stage, variant, _dtype, seconds, backend, device = k
    return f"{stage}/{variant} {backend}({device}) {seconds:g}s [{size}]"


def one_sided_checks(rows: pd.DataFrame, side_of: pd.Series, planned: dict[str, set[str]]) -> list[Check]:
    """Benchmarks timed on one side only: new in head (ok), or a comparison this job could not make."""
    key = ["model_size"] + results.MEASUREMENT + ["backend", "device"]
    timed = {}
    for s in SIDES:
        warm = rows[(rows.metric == "time_warm") & (side_of == s)]
        timed[s] = {tuple(r[:-1]): r[-1] for r in warm[key + ["test"]].itertuples(index=False)}
    checks = []
    for k in sorted(timed["head"].keys() - timed["base"].keys()):
        if timed["head"][k] in planned["base"]:
            checks.append(Check("time", _ab_subject(k), "cannot decide: base stored no time for it", UNDECIDED))
        else:
            checks.append(Check("time", _ab_subject(k), "new in head: nothing to compare with", OK))
    for k in sorted(timed["base"].keys() - timed["head"].keys()):
        if timed["base"][k] not in planned["head"]:  # one that head planned and failed is a failed run
            checks.append(Check("time", _ab_subject(k), "cannot decide: head no longer measures it", UNDECIDED))
    return checks


@dataclass
class Sides:
    """What one `rvc-bench ab` job measured: its rows (machine id made one), each row's side, each side's planned
    tests, why a side could not be measured (side -> (short commit, failure or None)), and what went wrong in its
    runs (side -> {problem: run numbers})."""

    rows: pd.DataFrame
    side_of: pd.Series
    planned: dict[str, set[str]]
    failures: dict[str, tuple[str, str | None]]
    outcomes: dict[str, dict[str, list[str]]]


def compare_sides(
    job: Sides,
    table: tolerances.Table,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    speed: str = "all",
    problems: list[str] = (),
    interval: bool = False,
    history: pd.DataFrame | None = None,
) -> tuple[list[Check], list[str]]:
    """(checks, notes) of head against base: the store, the runs, parity against `table` (head's), speed (speed
    "relative": only the backend/PyTorch ratios decide, the absolute times become notes), and the benchmarks timed
    on one side only. interval: the three-way rule; history: past rows of this machine, for per-benchmark
    thresholds of the absolute times."""
    checks, notes = side_checks(job.failures, job.outcomes)
    checks = store_checks(problems) + checks + paired_parity_checks(job.rows, job.side_of, table)
    base, head = job.rows[job.side_of == "base"], job.rows[job.side_of == "head"]
    thresholds = history_thresholds(history, max_slowdown) if history is not None else None
    absolute = compare_runs(base, head, max_slowdown, interval, thresholds)
    timing = relative_checks(base, head, max_slowdown, interval)
    if speed == "all":
        timing += absolute
    else:  # a shared runner: absolute times are shown, only the within-run ratios decide
        notes += [f"time {c.subject}: {c.detail} (not gated: --speed relative)" for c in absolute]
    checks += timing + one_sided_checks(job.rows, job.side_of, job.planned)
    if not timing and not any(c.status != OK for c in checks):
        checks.append(Check("time", "all", "cannot decide: no benchmark was measured on both sides", UNDECIDED))
    return checks, notes
