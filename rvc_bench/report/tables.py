"""The original document's tables, for one section (one machine, one model size). Tables of one shape share
their loop: `measurement_cells` (a time per column, then a speedup per column) and `backend_rows` (one row per
length and column)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rvc_bench import results
from rvc_bench.names import REFERENCES
from rvc_bench.report import notes
from rvc_bench.report.formatting import (
    RUN,
    TITLES,
    col,
    empty,
    fmt_bytes,
    fmt_len,
    fmt_lengths,
    fmt_line,
    fmt_time,
    later_calls,
    sig,
    speed_header,
    table,
)
from rvc_bench.report.query import GRID, Section, chunking_variant, pub, select


def measurement_cells(sec: Section, stage, variant, seconds, speeds, iqr: bool = True) -> dict:
    """One measurement's time on every column, then its speedup on each of `speeds`."""
    rec = {col(b, d): sec.time_cell(stage, variant, seconds, b, d, iqr) for b, d in sec.columns()}
    rec.update({speed_header(b, d): sec.speed_cell(stage, variant, seconds, b, d) for b, d in speeds})
    return rec


def backend_rows(sec: Section, stage: str, variant: str, fields) -> list[dict]:
    """One row per measured length and column; `fields(line or None, seconds, why missing)` gives its cells."""
    recs = []
    for seconds in sec.lengths(stage, variant, grid=()):
        for b, d in sec.columns():
            c = sec.cell(stage, variant, seconds, b, d)
            missing = None if c is not None else sec.missing_text(stage, variant, seconds, b)
            recs.append(
                {
                    "backend": col(b, d),
                    "audio": fmt_len(seconds),
                    **fields(c, seconds, missing),
                    "run": sec.run_cell(stage, variant, seconds),
                }
            )
    return recs


def _published_rmvpe(pubs: pd.DataFrame, seconds: float) -> str:
    runs = []
    for t in ("rmvpe_run1", "rmvpe_run2"):
        m, p = pub(pubs, t, "rmvpe", "mlx", seconds=seconds), pub(pubs, t, "rmvpe", "torch-mps", seconds=seconds)
        if m != "–":
            runs.append(f"MLX {m}, PyTorch MPS {p}")
    return " / ".join(runs) or "–"


def speed_table(sec: Section, stage: str, pubs: pd.DataFrame, title: str, grid=GRID) -> str:
    variant = sec.main_variant(stage)
    head = f"### {title}\n\n"
    if variant is None:
        return head + empty(f"no {stage} benchmark", f"{RUN} --stages {stage} --lengths {fmt_lengths(grid)}")
    recs = []
    for seconds in sec.lengths(stage, variant, grid):
        rec = {"audio": fmt_len(seconds), **measurement_cells(sec, stage, variant, seconds, sec.columns()[1:])}
        rec["run"] = sec.run_cell(stage, variant, seconds)
        if stage == "rmvpe" and sec.full:
            rec["published (M-series GPU; two runs)"] = _published_rmvpe(pubs, seconds)
        recs.append(rec)
    measured = set(sec.stage_lines(stage, variant).audio_seconds)
    unmeasured = [s for s in sec.lengths(stage, variant, grid) if s not in measured]
    fill = (
        f"\n`{RUN} --stages {stage} --lengths {fmt_lengths(unmeasured)}` fills the rows not measured.\n"
        if unmeasured
        else ""
    )
    return head + f"Variant `{variant}`. {notes.NOTE_TIME}\n\n" + table(recs) + fill


def _published_rows(pubs: pd.DataFrame, sec: Section, table_name: str, names, cells) -> list[dict]:
    """The original document's rows beside a table's measured ones (full-size sections only)."""
    return [
        {"backend": f"{name} (published, M-series)", **cells(table_name, key), "run": "original document"}
        for key, name in (names if sec.full else ())
    ]


def pipeline_table(sec: Section, pubs: pd.DataFrame) -> str:
    head = "### Full RVC pipeline, end to end\n\n"
    variant = sec.main_variant("pipeline")
    if variant is None:
        return head + empty("no pipeline benchmark", f"{RUN} --stages pipeline")
    recs = backend_rows(
        sec,
        "pipeline",
        variant,
        lambda c, seconds, missing: {
            "time": missing if c is None else fmt_line(c),
            "RTF": "–" if c is None else sig(c["median"] / seconds),
            "first call": "–" if c is None else fmt_time(c.cold),
        },
    )
    recs += _published_rows(
        pubs,
        sec,
        "pipeline",
        (("torch-mps", "PyTorch MPS"), ("mlx", "MLX")),
        lambda t, b: {"audio": "5 s", "time": pub(pubs, t, "pipeline", b, seconds=5.0), "RTF": "–", "first call": "–"},
    )
    return head + f"Variant `{variant}`: {notes.PIPELINE}\n\n" + table(recs)


def _first_later(c, missing) -> dict:
    """A mel line's (a Series or a named tuple) first call against its later ones."""
    if c is None:
        return {"first call": "–", "later calls": missing, "first / later": "–"}
    median = c["median"] if isinstance(c, pd.Series) else c.median  # a Series' .median is its method
    return {
        "first call": fmt_time(c.cold),
        "later calls": later_calls(c, fmt_line(c)),
        "first / later": later_calls(c, f"{sig(c.cold / median)}×"),
    }


def mel_table(sec: Section, pubs: pd.DataFrame) -> str:
    head = "### Mel spectrogram front end: numpy on the CPU against on-device\n\n"
    variant = sec.main_variant("mel")
    if variant is None:
        return head + empty("no mel benchmark", f"{RUN} --stages mel")
    recs = backend_rows(sec, "mel", variant, lambda c, seconds, missing: _first_later(c, missing))
    references = sec.stage_lines("mel")[sec.stage_lines("mel").backend.isin(REFERENCES)]
    for r in references.itertuples():
        recs.append(
            {
                "backend": f"{col(r.backend, r.device)}, float64 reference",
                "audio": fmt_len(r.audio_seconds),
                **_first_later(r, None),
                "run": f"`{r.run_id}`",
            }
        )
    if references.empty:
        recs.append(
            {
                "backend": "numpy (cpu), float64 reference",
                "audio": "–",
                "first call": "not measured",
                "later calls": "not measured",
                "first / later": "–",
                "run": f"`{RUN} --stages mel` (with the torch backend)",
            }
        )
    recs += _published_rows(
        pubs,
        sec,
        "mel",
        (("librosa-cpu", "librosa on the CPU"), ("mlx", "MLX")),
        lambda t, b: {
            "audio": "not stated",
            "first call": pub(pubs, t, "mel", b, "time_cold"),
            "later calls": pub(pubs, t, "mel", b, "time_warm"),
            "first / later": "–",
        },
    )
    return head + f"{notes.MEL}\n\n" + table(recs)


def components_table(sec: Section, pubs: pd.DataFrame, seconds: float = 5.0) -> str:
    head = f"### Component breakdown ({fmt_len(seconds)} of audio)\n\n"
    cols = sec.columns()
    if select(sec.lines, audio_seconds=seconds).empty:
        return head + empty(f"no benchmark at {fmt_len(seconds)}", RUN)
    published = lambda key: (  # noqa: E731
        f"{pub(pubs, 'components', key, 'mlx')} / {pub(pubs, 'components', key, 'torch-mps')}" if key else "–"
    )
    recs = [
        {
            "component": "Audio loading",
            **{col(b, d): "not measured (benchmarks start from decoded audio)" for b, d in cols},
            **{speed_header(b, d): "–" for b, d in cols[1:]},
        }
    ]
    if sec.full:
        recs[0]["published MLX / PyTorch MPS"] = published("audio_loading")
    for stage, pstage in (
        ("mel", None),
        ("hubert", "hubert"),
        ("rmvpe", "rmvpe"),
        ("synth", "synth"),
        ("pipeline", "total"),
    ):
        variant = sec.main_variant(stage)
        name = TITLES[stage] + (" (end to end: the total)" if stage == "pipeline" else "")
        rec = {"component": name + (f" `{variant}`" if variant else "")}
        if variant:
            rec.update(measurement_cells(sec, stage, variant, seconds, cols[1:]))
        else:
            rec.update({col(b, d): f"not measured (`{RUN} --stages {stage}`)" for b, d in cols})
            rec.update({speed_header(b, d): "–" for b, d in cols[1:]})
        if sec.full:
            rec["published MLX / PyTorch MPS"] = published(pstage)
        recs.append(rec)
    return head + f"{notes.COMPONENTS}\n\n" + table(recs)


CHUNKING_STAGES = {
    "rmvpe": "RMVPE: whole sequence against chunked",
    "synth": "Synthesizer: decoder in one pass against time tiles",
}


def chunking_table(sec: Section) -> str:
    out = []
    for stage, title in CHUNKING_STAGES.items():
        head = f"#### {title}\n\n"
        s = sec.stage_lines(stage)
        if not s.variant.map(chunking_variant).any():
            out.append(
                head
                + empty(
                    f"no chunking variant of {stage} beside its main one", f"{RUN} --stages {stage} --lengths 5,60,300"
                )
            )
            continue
        par = sec.parity
        par = par[par.reference.map(results.same_backend_reference) & (par.metric == "max_abs")]
        recs = []
        for r in s.sort_values(["audio_seconds", "backend", "device", "variant"]).itertuples():
            p = select(
                par, stage=stage, variant=r.variant, audio_seconds=r.audio_seconds, backend=r.backend, device=r.device
            )
            recs.append(
                {
                    "audio": fmt_len(r.audio_seconds),
                    "backend": col(r.backend, r.device),
                    "variant": f"`{r.variant}`",
                    "time": fmt_line(r),
                    "framework peak": fmt_bytes(r.mem),
                    "RSS Δ peak": fmt_bytes(r.rss),
                    "max abs Δ": f"{sig(p.value.iloc[0])} vs `{p.reference.iloc[0]}`" if len(p) else "–",
                }
            )
        out.append(head + table(recs))
    return f"### Chunking: whole against chunked\n\n{notes.CHUNKING} {notes.NOTE_TIME}\n\n" + "\n".join(out)


SCALING_STAGES = ("rmvpe", "hubert", "synth", "pipeline")


def ratio_text(num: float, den: float, goal: float | None = None) -> str:
    if not (results.finite(num) and results.finite(den)) or den <= 0:
        return "–"
    r = num / den
    return f"{sig(r)}×" + (f" ({(r / goal - 1) * 100:+.0f} %)" if goal else "")


def time_ratio(long, short, goal: float) -> str:
    """Time at the longer length over the shorter, each a line's median (its first call where the length was timed
    once), saying which kind each side is unless both are warm."""
    if short is None:
        return "–"
    kinds = ["first call" if c.first_only else "warm" for c in (long, short)]
    label = (
        "" if kinds == ["warm", "warm"] else ", first calls" if kinds[0] == kinds[1] else f", {kinds[0]} / {kinds[1]}"
    )
    return ratio_text(long["median"], short["median"], goal) + label


def scaling_table(sec: Section) -> str:
    head = "### Scaling with length\n\n"
    recs = []
    for stage in SCALING_STAGES:
        variant = sec.main_variant(stage)
        if variant is None:
            continue
        for b, d in sec.columns():
            c300 = sec.cell(stage, variant, 300.0, b, d)
            if c300 is None:
                continue
            # the pairing rule: a ratio only inside one run, that of the 5 min row, even where a newer run measured
            # a shorter length again
            same = select(sec.every, run_id=c300.run_id, stage=stage, variant=variant, backend=b, device=d)
            c5, c60 = (
                same[same.audio_seconds == t].iloc[0] if (same.audio_seconds == t).any() else None for t in (5.0, 60.0)
            )
            get = lambda c, k: c[k] if c is not None else math.nan  # noqa: E731
            recs.append(
                {
                    "stage": TITLES[stage],
                    "variant": f"`{variant}`",
                    "backend": col(b, d),
                    "time 5 min / 5 s (linear 60×)": time_ratio(c300, c5, 60),
                    "time 5 min / 1 min (linear 5×)": time_ratio(c300, c60, 5),
                    "framework peak 5 min / 1 min": ratio_text(get(c300, "mem"), get(c60, "mem")),
                    "RSS Δ 5 min / 1 min": ratio_text(get(c300, "rss"), get(c60, "rss")),
                }
            )
    if not recs:
        return head + empty("no stage measured at 5 min", f"{RUN} --lengths 5,60,300")
    return head + f"{notes.SCALING}\n\n" + table(recs)


def memory_table(sec: Section, stage: str, pubs: pd.DataFrame) -> str:
    head = f"#### {TITLES[stage]}\n\n"
    variant = sec.main_variant(stage)
    if variant is None:
        return head + empty(f"no {stage} benchmark", f"{RUN} --stages {stage} --lengths 5,60,300")
    recs = []
    for seconds in sec.lengths(stage, variant):
        rec = {"audio": fmt_len(seconds)}
        for b, d in sec.columns():
            c = sec.cell(stage, variant, seconds, b, d)
            text = (
                f"{fmt_bytes(c.mem)} / {fmt_bytes(c.rss)} / {fmt_bytes(c.rss_fresh)}"
                if c is not None
                else sec.missing_text(stage, variant, seconds, b)
            )
            rec[f"{col(b, d)}: framework peak / RSS Δ / fresh-process RSS"] = text
        if sec.full and stage == "rmvpe":
            rec["published MLX / PyTorch MPS"] = (
                f"{pub(pubs, 'memory', stage, 'mlx', 'memory', seconds)} / "
                f"{pub(pubs, 'memory', stage, 'torch-mps', 'memory', seconds)}"
            )
        elif sec.full:
            rec["published (backend not stated)"] = pub(pubs, "memory", stage, "unspecified", "memory", seconds)
        recs.append(rec)
    return head + table(recs)


def memory_section(sec: Section, pubs: pd.DataFrame) -> str:
    return (
        f"### Memory\n\n{notes.MEMORY}\n\n"
        + memory_table(sec, "rmvpe", pubs)
        + "\n"
        + memory_table(sec, "pipeline", pubs)
    )


def first_run_table(sec: Section, pubs: pd.DataFrame) -> str:
    head = "### First-run overhead per model\n\n"
    recs = []
    for stage in results.STAGE_ORDER:
        variant = sec.main_variant(stage)
        if variant is None:
            continue
        s = sec.stage_lines(stage, variant)
        first = s[s.audio_seconds == s.audio_seconds.min()]
        for r in first.itertuples():
            fresh = r.cold_fresh
            recs.append(
                {
                    "model": f"{TITLES[stage]} `{variant}`",
                    "backend": col(r.backend, r.device),
                    "audio": fmt_len(r.audio_seconds),
                    "first call, fresh process": fmt_time(fresh) if np.isfinite(fresh) else "not measured",
                    "first call in the benchmark process": fmt_time(r.cold),
                    "later calls": later_calls(r, fmt_time(r.median)),
                    "overhead (fresh first call − later)": later_calls(r, fmt_time(fresh - r.median))
                    if np.isfinite(fresh)
                    else "–",
                    "published (MLX)": (
                        f"{pub(pubs, 'first_run', stage, 'mlx', 'cold_overhead')}, "
                        f"{pub(pubs, 'first_run', stage, 'mlx', 'cold_over_warm')}"
                    )
                    if stage in ("rmvpe", "hubert", "synth") and r.backend == "mlx" and sec.full
                    else "–",
                }
            )
    if not recs:
        return head + empty("no benchmark", f"{RUN} --fresh-process")
    fill = (
        ""
        if sec.lines.cold_fresh.notna().any()
        else f"\nThe fresh-process column is empty: `{RUN} --fresh-process` fills it.\n"
    )
    return head + f"{notes.FIRST_RUN}\n\n" + table(recs) + fill
