"""From stored rows to the numbers the report and the gate show: one line per measured benchmark, which run
stands for each measurement on each machine, and ratios formed only inside one run.

The pairing rule: a ratio is only ever formed between rows of the same run, which implies the same machine, model
size, commit, options and rounds; within it, of the same stage, variant, dtype and audio length. A run that lacks
one side of a pair shows that side as missing: it is never completed from another run.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rvc_bench import stats, tolerances, variants
from rvc_bench.names import REFERENCES

REFERENCE_BACKEND = "torch"  # speedups are its time over the other backend's time
SECTION = ["machine_id", "model_size"]  # never mixed: one report section each
MEASUREMENT = ["stage", "variant", "dtype", "audio_seconds"]
LINE = SECTION + ["run_id", "started_at"] + MEASUREMENT + ["backend", "device", "device_name"]
STAGE_ORDER = {"mel": 0, "rmvpe": 1, "hubert": 2, "synth": 3, "pipeline": 4}
SINGLE = {
    "time_cold": "cold",
    "mem_framework_peak": "mem",
    "rss_peak_delta": "rss",
    "rss_fresh_process": "rss_fresh",
    "time_cold_fresh_process": "cold_fresh",
}


def lines(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per measured benchmark: warm rounds (array), median, quartiles, cold time and memory.
    A length timed once (`run --rounds 0` there: first call only) has rounds 0 and first_only set, and its one
    sample is the cold time: times, median and quartiles stand for it, so a ratio inside its run compares first
    calls with first calls (every backend of a run has the same counts at a length)."""
    cols = LINE + ["rounds", "first_only", "times", "median", "q1", "q3"] + list(SINGLE.values())
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for key, g in rows.groupby(LINE, sort=False, dropna=False):
        rec = dict(zip(LINE, key))
        for metric, name in SINGLE.items():
            hit = g.loc[g.metric == metric, "value"]
            rec[name] = float(hit.iloc[0]) if len(hit) else math.nan
        times = g.loc[g.metric == "time_warm"].sort_values("round").value.to_numpy()
        first_only = times.size == 0 and finite(rec["cold"])
        med, q1, q3 = stats.median_iqr(np.array([rec["cold"]]) if first_only else times)
        out.append(
            dict(
                rec,
                rounds=len(times),
                first_only=first_only,
                times=np.array([rec["cold"]]) if first_only else times,
                median=med,
                q1=q1,
                q3=q3,
            )
        )
    df = pd.DataFrame(out, columns=cols)
    order = df.stage.map(STAGE_ORDER).fillna(len(STAGE_ORDER))
    return (
        df.assign(_order=order)
        .sort_values(
            SECTION + ["_order", "stage", "variant", "dtype", "audio_seconds", "backend", "device"], kind="stable"
        )
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def newest(table: pd.DataFrame, key: list[str] | None = None, prefer: tuple[str, ...] = ()) -> pd.DataFrame:
    """For every (machine, model size, measurement), keep only the newest run that measured it (any backend);
    prefer: boolean columns of the table that rank a run above a newer one (True first)."""
    key = SECTION + MEASUREMENT if key is None else key
    if table.empty:
        return table
    order = [*prefer, "started_at", "run_id"]
    runs = table[key + order].drop_duplicates()
    chosen = runs.sort_values(order).groupby(key, dropna=False, sort=False).tail(1)
    return table.merge(chosen, on=key + order).reset_index(drop=True)


def newest_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The stored rows of `newest(lines(rows))`: every row of the run chosen for each measurement. A run that also
    measured optimisation variants gives its fp32 rows only where no plain run measured them: they are its
    variants' baselines (that table reads them from every run), and a plain run forms the stage tables' ratios.
    A variant row is the newest of its own backend."""
    with_variants = set(rows.run_id[variants.optimised(rows.variant)])
    table = lines(rows)
    table = table.assign(_plain=~table.run_id.isin(with_variants))
    # A variant's newest run is chosen per backend: variants are measured a backend at a time (each has its own),
    # so one backend's newer run of `+fp16` must not hide another backend's.
    optimised = variants.optimised(table.variant)
    chosen = pd.concat(
        [
            newest(table[~optimised], prefer=("_plain",)),
            newest(table[optimised], key=SECTION + MEASUREMENT + ["backend", "device"]),
        ]
    )[LINE].drop_duplicates()
    return rows.merge(chosen, on=LINE) if len(chosen) else rows.iloc[0:0]


def speedups(table: pd.DataFrame, reference: str = REFERENCE_BACKEND) -> pd.DataFrame:
    """Reference time / backend time with its bootstrap interval, for every other backend, inside each run, and the
    calls behind it on each side (ref_calls, calls: an interval from one call a side is no interval)."""
    cols = SECTION + ["run_id"] + MEASUREMENT + ["backend", "device", "ref_device", "speedup", "lo", "hi"]
    cols += ["ref_calls", "calls"]
    out = []
    for key, g in table.groupby(SECTION + ["run_id"] + MEASUREMENT, sort=False, dropna=False):
        ref = g[g.backend == reference]
        if len(ref) != 1:
            continue
        ref = ref.iloc[0]
        for r in g[(g.backend != reference) & ~g.backend.isin(REFERENCES)].itertuples():
            point, lo, hi = stats.ratio_ci(ref.times, r.times)
            out.append(
                dict(
                    zip(SECTION + ["run_id"] + MEASUREMENT, key),
                    backend=r.backend,
                    device=r.device,
                    ref_device=ref.device,
                    speedup=point,
                    lo=lo,
                    hi=hi,
                    ref_calls=len(ref.times),
                    calls=len(r.times),
                )
            )
    return pd.DataFrame(out, columns=cols)


def parity(rows: pd.DataFrame) -> pd.DataFrame:
    """Parity rows with the metric name alone (the "parity." prefix dropped), unjudged rows judged by today's table."""
    par = rows[rows.metric.str.startswith("parity.")]
    return judge_unjudged(par.assign(metric=par.metric.str.removeprefix("parity.")))


def judge_unjudged(par: pd.DataFrame) -> pd.DataFrame:
    """Two kinds of stored metric had no verdict where the table now has a bound, and showed as if they passed:
    pipeline rows stored before issue 19 (the waveform was left unjudged where the f0 tracks differed) and
    optimisation variants measured before their bound was written (RMVPE's 4-bit weights, 1330 cents off). Such a
    metric is judged by today's bound (against another backend; a same-backend variant's values stay measured only)."""
    todo = (par.stage.eq("pipeline").to_numpy() | variants.optimised(par.variant)) & par.within_bound.isna().to_numpy()
    todo &= ~par.reference.map(same_backend_reference).astype(bool).to_numpy()
    if not todo.any():
        return par
    par = par.reset_index(drop=True)  # rows of several store files repeat index labels
    for i in np.flatnonzero(todo):
        check = variants.check_of(par.variant.iat[i])
        b = tolerances.bounds(par.stage.iat[i], check, par.backend.iat[i]).get(par.metric.iat[i])
        if b is not None:
            par.loc[i, ["bound_op", "bound", "within_bound"]] = [b.op, b.bound, b.holds(float(par.value.iat[i]))]
    return par


def same_backend_reference(reference) -> bool:
    """Whether a parity value was computed against another variant of the same backend ("mlx whole", as the
    chunking benchmarks store it) rather than against a reference backend ("torch", "numpy-float64")."""
    return isinstance(reference, str) and " " in reference


def runs_of(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table.sort_values(["started_at", "run_id"]).run_id))


def finite(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(x)
