"""Figures for the report, from the summary table only: time, RTF, speedup and memory against audio length."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from rvc_bench.fileio import atomic_write_bytes


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # no version stamp: same bytes each time
    atomic_write_bytes(path, buf.getvalue())


FIGURES = ("time_and_rtf.png", "speedup_and_memory.png")  # the files write_all writes


def write_all(summary: pd.DataFrame, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    lines = list(summary.groupby(["stage", "variant", "backend", "device"], sort=False))

    fig, (ax_t, ax_rtf) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (stage, variant, backend, device), g in lines:
        g = g.sort_values("audio_seconds")
        lbl = f"{stage} {backend} ({device})"
        style = "-" if backend == "mlx" else "--"
        lo, hi = g["median"] - g["iqr"] / 2, g["median"] + g["iqr"] / 2
        ax_t.plot(g.audio_seconds, g["median"], style, marker="o", label=lbl)
        ax_t.fill_between(g.audio_seconds, lo.clip(lower=1e-9), hi, alpha=0.15)
        ax_rtf.plot(g.audio_seconds, g["median"] / g.audio_seconds, style, marker="o", label=lbl)
    for ax, title in ((ax_t, "warm median time (s), band = IQR"), (ax_rtf, "RTF = time / audio duration")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("audio length (s)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_rtf.legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, out_dir / FIGURES[0])
    plt.close(fig)
    names.append(FIGURES[0])

    mlx = summary[summary.backend == "mlx"]
    tch = summary[summary.backend == "torch"]
    pairs = mlx.merge(tch, on=["stage", "variant", "dtype", "audio_seconds"], suffixes=("_mlx", "_torch"))
    fig, (ax_s, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (stage, dm, dt), g in pairs.groupby(["stage", "device_mlx", "device_torch"], sort=False):
        g = g.sort_values("audio_seconds")
        ax_s.plot(g.audio_seconds, g.median_torch / g.median_mlx, marker="o", label=f"{stage}: torch({dt}) / mlx({dm})")
    ax_s.axhline(1.0, color="gray", lw=0.8)
    ax_s.set_xscale("log")
    ax_s.set_xlabel("audio length (s)")
    ax_s.set_title("speedup = PyTorch time / MLX time (>1: MLX faster)")
    ax_s.legend(fontsize=7)
    ax_s.grid(True, which="both", alpha=0.3)
    for (stage, variant, backend, device), g in lines:
        g = g.sort_values("audio_seconds")
        mem = g["mem"].where(np.isfinite(g["mem"]), g["rss"])
        src = "framework peak" if np.isfinite(g["mem"]).any() else "RSS Δ peak"
        ax_m.plot(g.audio_seconds, mem / 2**20, "-" if backend == "mlx" else "--", marker="o",
                  label=f"{stage} {backend} ({device}), {src}")
    ax_m.set_xscale("log")
    ax_m.set_yscale("log")
    ax_m.set_xlabel("audio length (s)")
    ax_m.set_title("peak memory (MiB)")
    ax_m.legend(fontsize=7)
    ax_m.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _save(fig, out_dir / FIGURES[1])
    plt.close(fig)
    names.append(FIGURES[1])
    return names
