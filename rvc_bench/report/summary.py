"""The document's opening: per machine the speedups with intervals, parity verdicts and published claims; then
every run in the store with its status."""

from __future__ import annotations

import pandas as pd

from rvc_bench import results
from rvc_bench import store as run_store
from rvc_bench.report import notes
from rvc_bench.report.formatting import (
    RUN,
    TITLES,
    backend_parts,
    col,
    empty,
    exact,
    fmt_counts,
    fmt_len,
    fmt_ratio,
    sig,
    table,
)
from rvc_bench.report.query import GRID, Section, select
from rvc_bench.report.tables import measurement_cells


def ties_of(par: pd.DataFrame, backend: str) -> str:
    """ "N of them pitch ties" for a failing frames_apart, where the row counted its ties (parity.TIE_MARGIN):
    frames the reference decided by less than float32 moves its salience, not a divergence of the port; "" where
    it did not count them."""
    tied = select(par, metric="frames_apart_tied", backend=backend).value
    return f"{sig(tied.iloc[0])} of them pitch ties at float32" if len(tied) else ""


def verdict(par: pd.DataFrame, cell, passed: str = "") -> str:
    """A parity verdict over the bounded rows of `par`: a pass count, or each broken bound by cell(row, ties)
    (ties: ties_of where the row is frames_apart, else "")."""
    bounded = par[par.within_bound.notna()]
    if bounded.empty:
        return "no bounded parity value"
    bad = bounded[~bounded.within_bound.astype(bool)]
    if bad.empty:
        return f"pass ({len(bounded)} of {len(bounded)}{passed})"
    return "FAIL: " + "; ".join(
        cell(r, ties_of(par, r.backend) if r.metric == "frames_apart" else "") for r in bad.itertuples()
    )


def parity_verdict(sec: Section, stage: str, variant: str, seconds: float) -> str:
    return verdict(
        sec.parity_of(stage, variant, seconds),
        lambda r, ties: (
            f"{r.backend} {r.metric} {sig(r.value)} (bound {r.bound_op} {exact(r.bound)}"
            + (f", {ties})" if ties else ")")
        ),
        " within bounds",
    )


def published_claims(pubs: pd.DataFrame) -> list[tuple[str, float, str, float]]:
    """(stage, length, published table, MLX's published speedup over PyTorch MPS) of every published claim."""
    cases = []
    for stage, seconds, tname in (
        [("rmvpe", s, t) for t in ("rmvpe_run1", "rmvpe_run2") for s in GRID]
        + [("pipeline", 5.0, "pipeline")]
        + [(s, 5.0, "components") for s in ("rmvpe", "hubert", "synth")]
    ):
        p = select(pubs, table=tname, stage=stage, audio_seconds=seconds, metric="time").set_index("backend").value
        cases.append((stage, seconds, tname, float(p["torch-mps"] / p["mlx"])))
    return cases


def claims(sec: Section, pubs: pd.DataFrame) -> str:
    """Each published speedup, tested where this section measured the same thing on the same kind of device."""
    cases = published_claims(pubs)
    if not {("mlx", "gpu"), ("torch", "mps")} <= set(sec.columns()):
        listed = "; ".join(
            f"{TITLES[stage]} {fmt_len(seconds)} {sig(claim)}× ({tname})" for stage, seconds, tname, claim in cases
        )
        return (
            "Published claims (MLX on an Apple GPU against PyTorch MPS: " + listed + ") are not testable on this "
            "machine, which ran " + ", ".join(col(b, d) for b, d in sec.columns()) + ".\n"
        )
    out = []
    for stage, seconds, tname, claim in cases:
        variant = sec.main_variant(stage)
        hit = select(
            sec.speed,
            stage=stage,
            variant=variant,
            audio_seconds=seconds,
            backend="mlx",
            device="gpu",
            ref_device="mps",
        )
        if variant is None or hit.empty:
            verdict = f"not measured here (`{RUN} --stages {stage} --lengths {seconds:g}` tests it)"
        else:
            r = hit.iloc[0]
            measured = fmt_ratio(r.speedup, r.lo, r.hi, (r.ref_calls, r.calls))
            verdict = f"{'held' if r.hi >= claim else 'not held'}: measured {measured}"
        out.append(
            f"- {TITLES[stage]} at {fmt_len(seconds)}: MLX {sig(claim)}× as fast as PyTorch MPS (published, "
            f"{tname}): {verdict}"
        )
    return "Published claims:\n\n" + "\n".join(out) + "\n"


def summary(secs: list[Section], pubs: pd.DataFrame) -> str:
    out = ["## Summary\n", f"{notes.NOTE_SPEEDUP} {notes.NOTE_CLAIMS}\n"]
    for sec in secs:
        recs = []
        for stage in results.STAGE_ORDER:
            variant = sec.main_variant(stage)
            if variant is None:
                continue
            for seconds in sorted(set(sec.stage_lines(stage, variant).audio_seconds)):
                recs.append(
                    {
                        "stage": f"{TITLES[stage]} (`{variant}`)",
                        "audio": fmt_len(seconds),
                        **measurement_cells(sec, stage, variant, seconds, sec.others(), iqr=False),
                        "parity": parity_verdict(sec, stage, variant, seconds),
                    }
                )
        out.append(f"### {sec.title}\n")
        out.append(table(recs) if recs else "*No benchmark lines.*\n")
        if sec.full:
            out.append(claims(sec, pubs))
    if not secs:
        out.append(empty("any benchmark", RUN))
    return "\n".join(out)


def runs_section(st: run_store.Store) -> str:
    """Every run, one line per backend it ran (the run's own cells on its first line)."""
    recs = []
    for info in sorted(st.runs.values(), key=lambda r: (r.machine_id, r.started_at, r.run_id)):
        rows = st.rows[st.rows.run_id == info.run_id]
        opts = (info.meta or {}).get("options") or (info.plan or {})
        missing = info.missing()
        sizes = sorted(set(rows.model_size)) or [str(opts.get("model_size", "?"))]
        commit = (rows.git_commit.iloc[0][:10] + (" (dirty)" if rows.git_dirty.iloc[0] else "")) if len(rows) else "–"
        run = {
            "machine": f"`{info.machine_id}`",
            "run": f"`{info.run_id}`",
            "started (UTC)": info.started_at,
            "commit": commit,
            "models": ", ".join(sizes),
            "rounds": f"{fmt_counts(opts.get('rounds', '?'))} + {fmt_counts(opts.get('warmup', '?'))} warm-up",
            "wall time": "–" if info.wall_seconds() is None else f"{sig(info.wall_seconds() / 60)} min",
        }
        status = "complete" if not missing else "**incomplete**: " + "; ".join(missing)
        backends = [backend_parts(d) for _, d in sorted(info.backends.items())] or [{"backend": ""}]
        for i, parts in enumerate(backends):
            first = i == 0
            cells = {k: v or "–" for k, v in parts.items()}
            recs.append({**(run if first else dict.fromkeys(run, "")), **cells, "status": status if first else ""})
    return f"## Runs\n\n{notes.RUNS}\n\n" + (table(recs) if recs else "")
