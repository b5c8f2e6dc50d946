"""One machine and model size's section: hardware, every table of the original document, numerical accuracy,
and the figures (their specs: rvc_bench.plots draws them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from rvc_bench import results
from rvc_bench.report import notes, realtime, tables
from rvc_bench.report.formatting import (
    RUN,
    TITLES,
    backend_text,
    col,
    empty,
    exact,
    fmt_bytes,
    fmt_len,
    runs_text,
    sig,
    table,
)
from rvc_bench.report.optimisation import optimisation_section, optimised_lines
from rvc_bench.report.query import Section, pub, select

FIGURE_KINDS = ("time", "speedup", "memory", "parity")


@dataclass
class FigureSpec:
    """What one figure shows; rvc_bench.plots draws it (only `write` does, `render` never imports matplotlib)."""

    name: str
    kind: str  # time | speedup | memory | parity | realtime
    section: Section


def figures_of(sec: Section) -> dict[str, FigureSpec]:
    kinds = FIGURE_KINDS + (("optimisation",) if optimised_lines(sec).size else ())
    kinds += ("realtime",) if realtime.has_rows(sec) else ()
    return {f"{sec.slug}-{kind}.png": FigureSpec(f"{sec.slug}-{kind}.png", kind, sec) for kind in kinds}


def hardware_table(sec: Section) -> str:
    """The original's "Hardware Specifications", from the newest run of the section."""
    info = sec.runs[results.runs_of(sec.lines)[-1]]
    m = info.meta.get("machine") or {}
    libs = ", ".join(f"{k} {v}" for k, v in sorted((m.get("libraries") or {}).items()) if v)
    recs = [
        ("chip / CPU", " ".join(x for x in (m.get("hw_model"), m.get("cpu")) if x) or "?"),
        ("cores, memory", f"{m.get('cpu_count', '?')} cores, {fmt_bytes(m.get('ram_bytes', math.nan))}"),
        ("GPUs", ", ".join(m.get("gpus") or []) or "none found"),
        ("OS", " ".join(str(x) for x in (m.get("system"), m.get("macos") or m.get("release"), m.get("machine")) if x)),
        ("Python, libraries", f"Python {m.get('python', '?')}; {libs}"),
        ("backends", "; ".join(backend_text(d) for _, d in sorted(info.backends.items())) or "–"),
    ]
    return f"### Hardware and software (run `{info.run_id}`)\n\n" + table([{"": k, "value": v} for k, v in recs])


def column_bounds(p: pd.DataFrame) -> pd.DataFrame:
    """Each metric's column bound: the one most of its values were held to (a backend's own bound shows in its
    cell), indexed by metric."""
    bounded = p[p.within_bound.notna()]
    return (
        bounded.assign(n=bounded.groupby(["metric", "bound_op", "bound"]).value.transform("size"))
        .sort_values(["metric", "n", "bound"], ascending=[True, False, True])
        .drop_duplicates("metric")
        .set_index("metric")
    )


def accuracy_cell(hit: pd.DataFrame, metric: str, bounded: pd.DataFrame) -> str:
    if hit.empty:
        return "–"
    h = hit.iloc[0]
    verdict = "" if pd.isna(h.within_bound) else (" pass" if h.within_bound else " **FAIL**")
    own = metric in bounded.index and pd.notna(h.within_bound) and h.bound != bounded.at[metric, "bound"]
    return sig(h.value) + verdict + (f" (bound {h.bound_op} {sig(h.bound)})" if own else "")


def accuracy_table(sec: Section, stage: str, pubs: pd.DataFrame) -> str:
    p = select(sec.parity, stage=stage)
    keys = list(
        p[["backend", "device", "reference", "variant", "audio_seconds"]]
        .drop_duplicates()
        .sort_values(["backend", "device", "variant", "audio_seconds"])
        .itertuples(index=False)
    )
    bounded = column_bounds(p)
    recs = []
    for m in sorted(p.metric.unique(), key=lambda m: (m not in bounded.index, m)):
        rec = {
            "metric": m,
            "bound": f"{bounded.at[m, 'bound_op']} {exact(bounded.at[m, 'bound'])}" if m in bounded.index else "–",
        }
        for k in keys:
            hit = select(
                p, metric=m, backend=k.backend, device=k.device, variant=k.variant, audio_seconds=k.audio_seconds
            )
            rec[f"{col(k.backend, k.device)} vs {k.reference}, `{k.variant}` {fmt_len(k.audio_seconds)}"] = (
                accuracy_cell(hit, m, bounded)
            )
        recs.append(rec)
    published = {
        "rmvpe": pub(pubs, "accuracy", "rmvpe", "mlx", "voiced_detection_error"),
        "pipeline": pub(pubs, "accuracy", "pipeline", "mlx", "correlation"),
    }.get(stage)
    note = f"\nPublished (original document, MLX): {published}.\n" if published and sec.full else ""
    return f"#### {TITLES.get(stage, stage)}\n\n" + table(recs) + note


def accuracy_section(sec: Section, pubs: pd.DataFrame) -> str:
    head = f"### Numerical accuracy\n\n{notes.ACCURACY}\n"
    par = sec.parity[sec.parity.stage != "stream"]  # the Real-time section judges the live mode
    if par.empty:
        return head + "\n" + empty("no parity value", RUN)
    stages = sorted(par.stage.unique(), key=lambda s: results.STAGE_ORDER.get(s, 99))
    return "\n".join([head] + [accuracy_table(sec, stage, pubs) for stage in stages])


def machine_section(sec: Section, pubs: pd.DataFrame) -> str:
    parts = [
        f"## {sec.title}\n\nRuns " + runs_text(results.runs_of(sec.lines)) + ".\n",
        hardware_table(sec),
        tables.speed_table(sec, "rmvpe", pubs, "RMVPE pitch detection"),
        tables.pipeline_table(sec, pubs),
        tables.components_table(sec, pubs),
        tables.mel_table(sec, pubs),
        tables.chunking_table(sec),
        tables.scaling_table(sec),
        optimisation_section(sec),
        tables.memory_section(sec, pubs),
        tables.first_run_table(sec, pubs),
        accuracy_section(sec, pubs),
    ]
    for stage in ("hubert", "synth"):
        if sec.main_variant(stage):
            parts.append(tables.speed_table(sec, stage, pubs, TITLES[stage], grid=()))
    parts += [s for s in (realtime.realtime_section(sec),) if s]  # only where stream rows exist
    parts.append("### Figures\n\n" + "\n".join(f"![{n}](figures/{n})" for n in figures_of(sec)) + "\n")
    return "\n".join(parts)
