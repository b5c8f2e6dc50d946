"""The report's figures (matplotlib, Agg), each drawn from a rvc_bench.report.sections.FigureSpec: one machine and
model size.

- time: warm median against audio length per stage and backend, log-log, band = interquartile range;
- speedup: PyTorch time / other backend's time against length, with the 95 % bootstrap interval;
- memory: peak memory against length (framework counter where there is one, else RSS Δ), log-log;
- parity: every bounded parity value as a fraction of its bound (below 1 passes; for ">=" bounds bound / value);
- optimisation (sections with optimisation variants): warm time against error vs fp32 torch, per stage.
- realtime (sections with stream rows): the live mode's processing per block against the block, at the default
  extra context.
"""

from __future__ import annotations

import io

import numpy as np

from rvc_bench import variants

STYLE = {"torch": "--", "mlx": "-", "onnx": ":", "numpy": "-."}


def _axes(title: str, xlabel: str = "audio length (s)", logy: bool = True):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


CURVE = ("stage", "variant", "backend", "device")  # what one line of a figure shows


def _curves(frame, keys=CURVE):
    """One curve per `keys`, in the table's order: (its key, its rows by length)."""
    for key, g in frame.groupby(list(keys), sort=False):
        yield key, g.sort_values("audio_seconds")


def _per_length(lines):
    """The stages measured against length (the live mode's stream rows have a figure of their own)."""
    return lines[lines.stage != "stream"]


def _time(sec):
    fig, ax = _axes("warm median time (s); band: interquartile range; hollow: first call (a length timed once)")
    for (stage, variant, backend, device), g in _curves(_per_length(sec.lines)):
        (line,) = ax.plot(
            g.audio_seconds,
            g["median"],
            STYLE.get(backend, "-"),
            marker="o",
            label=f"{stage} {variant}: {backend} ({device})",
        )
        once = g[g.first_only.astype(bool)]
        ax.plot(once.audio_seconds, once["median"], "o", color="white", markeredgecolor=line.get_color())
        ax.fill_between(g.audio_seconds, g.q1, g.q3, alpha=0.2, color=line.get_color())
    return fig, ax


def _speedup(sec):
    fig, ax = _axes("speedup = PyTorch time / backend time (> 1: faster); bars: 95 % bootstrap interval", logy=False)
    for (stage, variant, backend, device, ref), g in _curves(_per_length(sec.speed), (*CURVE, "ref_device")):
        ax.errorbar(
            g.audio_seconds,
            g.speedup,
            yerr=[g.speedup - g.lo, g.hi - g.speedup],
            marker="o",
            capsize=3,
            label=f"{stage} {variant}: {backend} ({device}) vs torch ({ref})",
        )
    ax.axhline(1.0, color="gray", lw=0.8)
    return fig, ax


def _memory(sec):
    fig, ax = _axes("peak memory (MiB): framework counter, else RSS Δ")
    for (stage, variant, backend, device), g in _curves(_per_length(sec.lines)):
        framework = np.isfinite(g["mem"]).all()
        mem = g["mem"] if framework else g["rss"]
        ax.plot(
            g.audio_seconds,
            mem / 2**20,
            STYLE.get(backend, "-"),
            marker="o",
            label=f"{stage} {variant}: {backend} ({device}), {'framework' if framework else 'RSS Δ'}",
        )
    return fig, ax


def _parity(sec):
    fig, ax = _axes("parity value / bound (below 1 passes)", xlabel="", logy=True)
    ax.set_xscale("linear")
    par = sec.parity
    par = par[par.within_bound.notna()].sort_values(["stage", "metric", "backend", "audio_seconds"])
    labels, values, colors = [], [], []
    for r in par.itertuples():
        if r.bound_op == "<=":  # a count bounded by 0 (frames_apart) has no ratio: 0 passes, anything else fails
            frac = r.value / r.bound if r.bound else (0.0 if r.value <= 0 else np.inf)
        else:
            frac = r.bound / r.value if r.value > 0 else np.inf
        labels.append(f"{r.stage} {r.metric} {r.backend} {r.audio_seconds:g}s")
        # 0 (and SNR inf) drawn at the axis floor; a broken bound without a finite ratio drawn past the line
        values.append(max(frac, 1e-6) if np.isfinite(frac) else (1e-6 if r.within_bound else 10.0))
        colors.append("tab:green" if r.within_bound else "tab:red")
    ax.bar(range(len(values)), values, color=colors)
    ax.set_ylim(1e-6, max([2.0] + values))
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    return fig, ax


ERROR_FLOOR = 1e-8  # the fp32 torch reference itself (no error against itself) is drawn here


def relative_error(par) -> float:
    """A row's error against the fp32 torch reference as one number: its rel L2, or the one its SNR implies."""
    by = dict(zip(par.metric, par.value))
    if "rel_l2" in by:
        return by["rel_l2"]
    return 10 ** (-by["snr_db"] / 20) if "snr_db" in by else np.nan


def _optimisation(sec):
    """Time against error of every variant (the optimisation variants and fp32), one point each, per stage: the
    Pareto front is the lower-left edge."""
    fig, ax = _axes("warm median time (s) against error vs fp32 torch (rel L2); label: variant", "warm median (s)")
    markers = {"torch": "s", "mlx": "o", "onnx": "^"}
    for stage, g in sec.lines[sec.lines.stage.isin(("hubert", "rmvpe", "synth", "pipeline"))].groupby("stage"):
        color = None
        for r in g.itertuples():
            par = sec.parity_of(stage, r.variant, r.audio_seconds, r.backend, r.device)
            name = variants.of_row(r.variant)
            reference = (r.backend, r.device, name) == ("torch", "cpu", variants.FP32)
            err = max(ERROR_FLOOR if reference else relative_error(par), ERROR_FLOOR)
            if not np.isfinite(err):
                continue
            (pt,) = ax.plot(r.median, err, markers.get(r.backend, "x"), color=color)
            color = pt.get_color()
            ax.annotate(f"{r.backend} {name}", (r.median, err), fontsize=5)
        if color is not None:
            ax.plot([], [], "o", color=color, label=f"{stage}")
    return fig, ax


def _realtime(sec):
    from rvc_bench.report.realtime import DEFAULTS, stream_figures

    fig, ax = _axes(
        "live mode: processing per block (ms), median; bars up to p99; grey: the block (its deadline)", "block"
    )
    rows = sec.rows[(sec.rows.stage == "stream") & (sec.rows.extra_time == DEFAULTS.extra_time)]
    figs = stream_figures(rows)
    for (backend, device, seconds), g in figs.groupby(["backend", "device", "audio_seconds"], sort=True):
        g = g.sort_values("block_time")
        ax.errorbar(
            g.block_time,
            g.p50_ms,
            yerr=[np.zeros(len(g)), g.p99_ms - g.p50_ms],
            fmt=STYLE.get(backend, "-"),
            marker="o",
            capsize=3,
            label=f"{backend} ({device}), {seconds:g} s of audio",
        )
    blocks = sorted(figs.block_time.unique())
    ax.plot(blocks, [1000 * b for b in blocks], color="gray", lw=0.8)
    _length_ticks(ax, blocks)
    return fig, ax


DRAW = {
    "time": _time,
    "speedup": _speedup,
    "memory": _memory,
    "parity": _parity,
    "optimisation": _optimisation,
    "realtime": _realtime,
}


def _length_ticks(ax, lengths) -> None:
    """Tick the measured lengths themselves (a log axis would print 5x10^-1 and skip most of them)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ticks = sorted(set(float(x) for x in lengths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks, [f"{t:g} s" if t < 60 or t % 60 else f"{t / 60:g} min" for t in ticks])


def png(spec) -> bytes:
    """The figure as PNG bytes (no version stamp in the metadata: same data, same bytes on one installation)."""
    import matplotlib.pyplot as plt

    fig, ax = DRAW[spec.kind](spec.section)
    if spec.kind not in ("parity", "optimisation", "realtime"):
        _length_ticks(ax, spec.section.lines.audio_seconds)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
