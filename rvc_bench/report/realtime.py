"""The "Real-time" section: RVC's live mode (rvc_bench.stream) per backend and device, from the stage "stream" rows
of suites/test_bench_stream.py. A section without stream rows has no such section (the document is unchanged)."""

from __future__ import annotations

import math

import pandas as pd

from rvc_bench.report.formatting import col, fmt_bytes, fmt_len, sig, table
from rvc_bench.report.query import Section, select
from rvc_bench.stream import StreamOptions

SETTINGS = ["block_time", "crossfade_time", "extra_time"]
KEY = ["backend", "device", "variant", "audio_seconds", *SETTINGS]
DEFAULTS = StreamOptions()
NOTE = (
    "The live mode fed from a file on a simulated clock (`suites/test_bench_stream.py`; `rvc-bench stream` runs the "
    "same): each block converts extra + crossfade + 10 ms + block of input and returns one block. Delay: the "
    "algorithmic delay, 2 x block + crossfade + 10 ms (upstream's author's figure; the audio device's buffers come "
    "on top). Processing: each block's time, the prewarm block excluded (cold). RTF: mean processing / block. "
    "Missed: blocks that finished after their deadline (one block after their input was complete; a late block "
    "delays the next). Latency: delay + p95 processing. Sustainable: no missed deadline and p99 below the block, "
    f"at the default crossfade ({DEFAULTS.crossfade_time:g} s) and extra context ({DEFAULTS.extra_time:g} s). "
    "Parity: against PyTorch's stream of the same input and noise (`suites/stream_twins.py`; `references/"
    "parity_tolerances.csv`, stage stream, check twins): the pitch of every RMVPE call, frame by frame, where a "
    "frame apart that torch decided by less than float32's resolution is a tie, not a divergence; and the rest of "
    "the stream, block by block, given torch's RMVPE output. Stream rows are left out of the other tables and "
    "figures."
)


def stream_figures(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per stream configuration: its stream.<figure> values, cold time and memory as columns."""
    rows = rows.assign(name=rows.metric.str.removeprefix("stream."))
    wanted = rows[
        rows.metric.str.startswith("stream.") | rows.metric.isin(["time_cold", "mem_framework_peak", "rss_peak_delta"])
    ]
    return wanted.pivot_table(index=KEY, columns="name", values="value", aggfunc="first").reset_index()


def sustainable(fig: pd.DataFrame) -> pd.DataFrame:
    """The default-context configurations a backend keeps up with."""
    ok = (fig.missed_share == 0) & (fig.p99_ms < 1000 * fig.block_time)
    default = (fig.crossfade_time == DEFAULTS.crossfade_time) & (fig.extra_time == DEFAULTS.extra_time)
    return fig[ok & default]


def verdicts(fig: pd.DataFrame) -> list[dict]:
    recs = []
    for (backend, device, seconds), g in fig.groupby(["backend", "device", "audio_seconds"], sort=True):
        good = sustainable(g).sort_values("block_time")
        blocks = ", ".join(f"{b:g}" for b in sorted(g.block_time.unique()))
        best = good.iloc[0] if len(good) else None
        recs.append(
            {
                "backend": col(backend, device),
                "audio": fmt_len(seconds),
                "blocks measured (s)": blocks,
                "smallest sustainable block": "none of these" if best is None else f"{best.block_time:g} s",
                "its latency": "–" if best is None else f"{best.latency_ms:.0f} ms",
            }
        )
    return recs


def parity_text(rows: pd.DataFrame, r) -> str:
    """The stream's bounded parity against torch's stream (suites/stream_twins.py), for one configuration, and
    what float32 ties did to the free-running stream."""
    par = select(rows, **{k: r[k] for k in KEY})
    par = par[par.metric.str.startswith("parity.")]
    judged = par[par.within_bound.notna()]
    if judged.empty:
        return "–"
    bad = judged[~judged.within_bound.astype(bool)]
    verdict = (
        f"pass ({len(judged)} of {len(judged)})"
        if bad.empty
        else "FAIL: "
        + "; ".join(
            f"{b.metric.removeprefix('parity.')} {sig(b.value)} ({b.bound_op} {b.bound:g})" for b in bad.itertuples()
        )
    )
    return verdict + ties_text(par.set_index("metric").value)


def ties_text(v: pd.Series) -> str:
    """ "; free-running: N f0 frames apart (M ties), worst block X dB" where RMVPE calls parted."""
    apart, tied = v.get("parity.frames_apart", 0), v.get("parity.frames_apart_tied", 0)
    if not apart > 0:
        return ""
    snr = v.get("parity.snr_db", math.nan)
    worst = f", worst block {sig(snr)} dB" if math.isfinite(snr) else ""
    frames, ties = f"{apart:.0f} f0 frame{'s' if apart > 1 else ''}", f"{tied:.0f} tie{'' if tied == 1 else 's'}"
    return f"; free-running: {frames} apart ({ties}){worst}"


def memory(r) -> str:
    peak = r.get("mem_framework_peak", math.nan)
    return fmt_bytes(peak) if math.isfinite(peak) else f"RSS Δ {fmt_bytes(r.get('rss_peak_delta', math.nan))}"


def figures_table(fig: pd.DataFrame, rows: pd.DataFrame) -> list[dict]:
    recs = []
    for _, r in fig.sort_values(KEY).iterrows():
        recs.append(
            {
                "backend": col(r.backend, r.device),
                "audio": fmt_len(r.audio_seconds),
                "block / crossfade / extra (s)": f"{r.block_time:g} / {r.crossfade_time:g} / {r.extra_time:g}",
                "delay": f"{r.delay_ms:.0f} ms",
                "p50 / p95 / p99 / max (ms)": " / ".join(sig(r[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
                "RTF": sig(r.rtf),
                "missed": f"{100 * r.missed_share:.0f} %",
                "latency": f"{r.latency_ms:.0f} ms",
                "cold block": f"{1000 * r.time_cold:.0f} ms",
                "peak memory": memory(r),
                "parity vs torch": parity_text(rows, r),
            }
        )
    return recs


def has_rows(sec: Section) -> bool:
    return bool((sec.rows.stage == "stream").any())


def realtime_section(sec: Section) -> str | None:
    """### Real-time, or None where the section has no stream rows. Its figure (rvc_bench.plots, kind realtime) is
    with the section's others."""
    if not has_rows(sec):
        return None
    rows = select(sec.rows, stage="stream")
    fig = stream_figures(rows)
    return f"### Real-time\n\n{NOTE}\n\n" + table(verdicts(fig)) + "\n" + table(figures_table(fig, rows))
