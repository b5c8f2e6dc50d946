"""reports/BENCHMARKS.md from the run store alone: a pure function of the stored rows (no model code, no clock).

For every (stage, variant, backend, device, dtype, length) the newest run that measured it supplies the numbers;
results on different devices are never merged. Regenerating from the same store gives the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from rvc_bench import store as run_store
from rvc_bench.fileio import atomic_write_bytes

KEY = ["stage", "variant", "backend", "device", "device_name", "dtype", "audio_seconds"]
STAGE_ORDER = {"mel": 0, "rmvpe": 1, "hubert": 2, "synth": 3, "pipeline": 4}
STAGE_TITLES = {"mel": "Log-mel (RMVPE front end)", "rmvpe": "RMVPE pitch", "hubert": "HuBERT/ContentVec features",
                "synth": "RVC synthesis", "pipeline": "Full pipeline"}
# The one parity number shown per row in the overview, per stage (all of them are in the parity table).
HEADLINE_PARITY = {"mel": "max_abs", "rmvpe": "max_abs", "hubert": "rel_l2", "synth": "snr_db", "pipeline": "snr_db"}
REFERENCES = Path(__file__).resolve().parents[1] / "references" / "original_benchmarks.csv"


class ReportError(RuntimeError):
    pass


def latest(rows: pd.DataFrame) -> pd.DataFrame:
    """Keep, for every measurement key, only the rows of the newest run that has it."""
    if rows.empty:
        return rows
    runs = rows[KEY + ["started_at", "run_id"]].drop_duplicates()
    newest = runs.sort_values(["started_at", "run_id"]).groupby(KEY, dropna=False).tail(1)
    return rows.merge(newest, on=KEY + ["started_at", "run_id"])


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per measurement key: warm median/IQR, cold, memory, parity values as columns."""
    out = []
    for key, g in rows.groupby(KEY, dropna=False, sort=False):
        warm = g.loc[g.metric == "time_warm", "value"].to_numpy()
        one = lambda m: float(g.loc[g.metric == m, "value"].iloc[0]) if (g.metric == m).any() else math.nan  # noqa: E731
        rec = dict(zip(KEY, key))
        rec.update(run_id=g.run_id.iloc[0], rounds=len(warm),
                   median=float(np.median(warm)) if len(warm) else math.nan,
                   iqr=float(np.subtract(*np.percentile(warm, [75, 25]))) if len(warm) else math.nan,
                   cold=one("time_cold"), mem=one("mem_framework_peak"), rss=one("rss_peak_delta"),
                   rss_fresh=one("rss_fresh_process"), cold_fresh=one("time_cold_fresh_process"))
        for m in g.metric[g.metric.str.startswith("parity.")].unique():
            rec[m] = one(m)
            rec["parity_reference"] = g.loc[g.metric == m, "reference"].iloc[0]
        out.append(rec)
    df = pd.DataFrame(out)
    df["stage_order"] = df.stage.map(STAGE_ORDER).fillna(99)
    return df.sort_values(["stage_order", "stage", "variant", "audio_seconds", "backend", "device"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------
# Formatting: fixed rules so the same numbers always give the same text.


def fmt_s(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.3f} s"


def fmt_bytes(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{x / 2**20:.1f} MiB" if x < 2**30 else f"{x / 2**30:.2f} GiB"


def fmt_num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if np.isinf(x):
        return "∞"
    return f"{x:.3g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4f}".rstrip("0").rstrip(".")


def fmt_len(s: float) -> str:
    return f"{s:g} s" if s < 60 or s % 60 else f"{s / 60:g} min"


def table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True) + "\n"


def label(r) -> str:
    return f"{r.backend} ({r.device})"


# ---------------------------------------------------------------------------------------------------------------
# Sections


def machines_section(summary: pd.DataFrame, runs: dict) -> str:
    lines = []
    for run_id in sorted(summary.run_id.unique(), key=lambda r: (runs[r]["started_at"], r)):
        meta = runs[run_id]
        mach = meta.get("machine", {})
        backends = meta.get("backends", {})
        desc = "; ".join(
            f"{lbl}: {d.get('device_name', '?')}, {d.get('backend')} {d.get('torch_version') or d.get('mlx_version')}"
            + (f", BLAS {d['torch_blas']}" if d.get("torch_blas") else "")
            + (f" ({d['torch_cpu_sgemm_gflops']} GFLOP/s sgemm 512)" if d.get("torch_cpu_sgemm_gflops") else "")
            + (f", BLAS: {d['mlx_cpu_blas']} ({d['mlx_cpu_sgemm_gflops']} GFLOP/s sgemm 512)" if d.get("mlx_cpu_blas") else "")
            for lbl, d in sorted(backends.items()))
        opts = meta.get("options", {})
        lines.append({
            "run": f"`{run_id}`", "started (UTC)": meta["started_at"],
            "commit": meta["git_commit"][:10] + (" (dirty)" if meta.get("git_dirty") else ""),
            "machine": f"{mach.get('cpu', '?')}, {mach.get('cpu_count', '?')} cores, "
                       f"{fmt_bytes(mach.get('ram_bytes', math.nan))}, {mach.get('system', '?')} "
                       f"{mach.get('macos') or mach.get('release', '')} {mach.get('machine', '')}".strip(),
            "backends": desc,
            "models / rounds": f"{opts.get('model_size', '?')} / {opts.get('rounds', '?')} warm + {opts.get('warmup', '?')} warm-up",
        })
    return "## Machines and runs\n\n" + table(pd.DataFrame(lines))


def overview_section(summary: pd.DataFrame) -> str:
    rows = []
    for r in summary.itertuples():
        head = HEADLINE_PARITY.get(r.stage, "max_abs")
        par = summary.at[r.Index, f"parity.{head}"] if f"parity.{head}" in summary else math.nan
        rows.append({
            "stage": r.stage, "variant": r.variant, "backend (device)": label(r), "audio": fmt_len(r.audio_seconds),
            "warm median": fmt_s(r.median), "IQR": fmt_s(r.iqr), "rounds": r.rounds,
            "RTF (time/audio)": fmt_num(r.median / r.audio_seconds),
            "RTFx (audio/time)": fmt_num(r.audio_seconds / r.median) if r.median > 0 else "–",
            "cold (1st call)": fmt_s(r.cold), "peak mem (framework)": fmt_bytes(r.mem),
            "RSS Δ peak": fmt_bytes(r.rss),
            "parity": f"{head} {fmt_num(par)} vs {summary.at[r.Index, 'parity_reference']}" if not math.isnan(par)
            else "–",
        })
    return ("## All stages\n\nWarm time is the median over timed rounds after explicit warm-up; IQR is the "
            "interquartile range of those rounds. RTF = processing time / audio duration (< 1 is faster than "
            "real time); RTFx = its inverse. Cold is the first call after loading the model (kernel compilation "
            "included). Peak memory (framework) is MLX's peak counter, torch CUDA's max allocated, or torch MPS "
            "current allocated memory sampled every 2 ms (MPS has no peak API; its sampled driver memory is stored "
            "as mem_mps_driver_peak_sampled); torch on CPU has no such counter (n/a). RSS Δ peak is the process high-water "
            "mark during the cold call minus RSS before it.\n\n" + table(pd.DataFrame(rows)))


def pairs(summary: pd.DataFrame, stage: str) -> pd.DataFrame:
    """MLX and torch side by side per (variant, length, device pair)."""
    s = summary[summary.stage == stage]
    mlx = s[s.backend == "mlx"]
    tch = s[s.backend == "torch"]
    return mlx.merge(tch, on=["stage", "variant", "dtype", "audio_seconds"], suffixes=("_mlx", "_torch"))


def speed_section(summary: pd.DataFrame, stage: str, title: str) -> str:
    p = pairs(summary, stage)
    if p.empty:
        return f"## {title}\n\nNot measured on both backends in this store.\n"
    out = [f"## {title}\n"]
    for (variant, dm, dt), g in p.groupby(["variant", "device_mlx", "device_torch"], sort=False):
        rows = [{"audio length": fmt_len(r.audio_seconds), f"MLX ({dm}) time": fmt_s(r.median_mlx),
                 f"PyTorch ({dt}) time": fmt_s(r.median_torch),
                 "speedup (torch time / MLX time)": f"{r.median_torch / r.median_mlx:.2f}×"} for r in g.itertuples()]
        ratios = (g.median_torch / g.median_mlx).to_numpy()
        rows.append({"audio length": "**geometric mean**", f"MLX ({dm}) time": "–", f"PyTorch ({dt}) time": "–",
                     "speedup (torch time / MLX time)": f"**{np.exp(np.mean(np.log(ratios))):.2f}×**"})
        out.append(f"Variant `{variant}`, MLX on {dm}, PyTorch on {dt}:\n\n" + table(pd.DataFrame(rows)))
    return "\n".join(out)


def components_section(summary: pd.DataFrame) -> str:
    seconds = 5.0
    rows, totals = [], {}
    for stage in ("mel", "rmvpe", "hubert", "synth"):
        p = pairs(summary, stage)
        p = p[p.audio_seconds == seconds]
        if p.empty:
            rows.append({"component": STAGE_TITLES[stage], "MLX time": "not measured", "PyTorch time": "not measured",
                         "speedup": "–"})
            continue
        r = next(p.itertuples())
        rows.append({"component": f"{STAGE_TITLES[stage]} (`{r.variant}`)", "MLX time": f"{fmt_s(r.median_mlx)} ({r.device_mlx})",
                     "PyTorch time": f"{fmt_s(r.median_torch)} ({r.device_torch})",
                     "speedup": f"{r.median_torch / r.median_mlx:.2f}×"})
        if stage != "mel":  # RMVPE's timed call already includes its mel front end
            totals.setdefault("mlx", []).append(r.median_mlx)
            totals.setdefault("torch", []).append(r.median_torch)
    if len(totals.get("mlx", [])) == 3:
        m, t = sum(totals["mlx"]), sum(totals["torch"])
        rows.append({"component": "**sum of RMVPE + HuBERT + synthesis**", "MLX time": fmt_s(m), "PyTorch time": fmt_s(t),
                     "speedup": f"{t / m:.2f}×"})
    p = pairs(summary, "pipeline")
    p = p[p.audio_seconds == seconds]
    if not p.empty:
        r = next(p.itertuples())
        rows.append({"component": f"**full pipeline, measured end to end** (`{r.variant}`)",
                     "MLX time": f"{fmt_s(r.median_mlx)} ({r.device_mlx})", "PyTorch time": f"{fmt_s(r.median_torch)} ({r.device_torch})",
                     "speedup": f"{r.median_torch / r.median_mlx:.2f}×"})
    return ("## Component breakdown (5 s of audio)\n\nStage medians measured separately; their sum leaves out "
            "padding, retrieval and chunk bookkeeping, and runs on the unpadded 5 s (the pipeline works on 7 s of "
            "reflect-padded audio), so the end-to-end row is the one to quote.\n\n" + table(pd.DataFrame(rows)))


def memory_section(summary: pd.DataFrame) -> str:
    out = ["## Memory usage\n\nFramework peak is each framework's own counter (see above); RSS figures are process "
           "resident memory. The two are different quantities and are never added.\n"]
    for stage in ("rmvpe", "hubert", "synth"):
        p = pairs(summary, stage)
        if p.empty:
            continue
        rows = [{"audio length": fmt_len(r.audio_seconds), f"MLX ({r.device_mlx}) framework peak": fmt_bytes(r.mem_mlx),
                 f"MLX RSS Δ peak": fmt_bytes(r.rss_mlx), "MLX fresh-process RSS": fmt_bytes(r.rss_fresh_mlx),
                 f"PyTorch ({r.device_torch}) framework peak": fmt_bytes(r.mem_torch),
                 "PyTorch RSS Δ peak": fmt_bytes(r.rss_torch), "PyTorch fresh-process RSS": fmt_bytes(r.rss_fresh_torch)}
                for r in p.itertuples()]
        out.append(f"### {STAGE_TITLES[stage]}\n\n" + table(pd.DataFrame(rows)))
    return "\n".join(out)


def cold_section(summary: pd.DataFrame) -> str:
    rows = []
    for r in summary.itertuples():
        rows.append({"stage": r.stage, "backend (device)": label(r), "audio": fmt_len(r.audio_seconds),
                     "first call": fmt_s(r.cold), "warm median": fmt_s(r.median),
                     "first-call overhead": fmt_s(r.cold - r.median) if r.cold >= r.median else "none",
                     "first / warm": f"{r.cold / r.median:.2f}×" if r.median > 0 else "–",
                     "first call, fresh process": fmt_s(r.cold_fresh)})
    return ("## First-call (cold) overhead\n\nThe first call after loading a model includes kernel compilation "
            "and allocator warm-up. Within one process later lengths reuse compiled kernels; the fresh-process "
            "column (when measured with --fresh-process) is the true cold start.\n\n" + table(pd.DataFrame(rows)))


def parity_section(rows: pd.DataFrame) -> str:
    par = rows[rows.metric.str.startswith("parity.")]
    if par.empty:
        return "## Numerical parity\n\nNo parity rows in this store.\n"
    par = par.assign(metric=par.metric.str.removeprefix("parity."))
    wide = par.pivot_table(index=["stage", "variant", "backend", "device", "reference", "audio_seconds"],
                           columns="metric", values="value", aggfunc="first").reset_index()
    wide["order"] = wide.stage.map(STAGE_ORDER).fillna(99)
    wide = wide.sort_values(["order", "stage", "variant", "audio_seconds", "backend"]).drop(columns="order")
    metrics = [c for c in wide.columns if c not in ("stage", "variant", "backend", "device", "reference", "audio_seconds")]
    out = []
    for r in wide.itertuples(index=False):
        d = r._asdict()
        rec = {"stage": d["stage"], "variant": d["variant"], "test": f"{d['backend']} ({d['device']})",
               "reference": d["reference"], "audio": fmt_len(d["audio_seconds"])}
        rec.update({m: fmt_num(d[m]) for m in metrics})
        out.append(rec)
    return ("## Numerical parity\n\nEvery timed output is compared with its reference in the same run (MLX against "
            "PyTorch; the mel twins against a float64 numpy reference). Definitions: rvc_bench/parity.py.\n\n"
            + table(pd.DataFrame(out)))


def claims_section(summary: pd.DataFrame) -> str:
    if not REFERENCES.is_file():
        return ""
    ref = pd.read_csv(REFERENCES, comment="#")
    rm = ref[ref.table.str.startswith("rmvpe_run")]
    mlx = rm[rm.backend == "mlx"].groupby("audio_seconds").value.median()
    mps = rm[rm.backend == "torch-mps"].groupby("audio_seconds").value.median()
    p = pairs(summary, "rmvpe")
    rows = []
    for s in sorted(mlx.index):
        here = p[p.audio_seconds == s]
        measured = "not measured here"
        if not here.empty:
            r = next(here.itertuples())
            measured = f"{r.median_torch / r.median_mlx:.2f}× (MLX {r.device_mlx} vs PyTorch {r.device_torch})"
        rows.append({"audio length": fmt_len(s), "claimed speedup (median of 2 published runs, M-series, vs MPS)":
                     f"{mps[s] / mlx[s]:.2f}×", "measured speedup in this store": measured})
    return ("## The original document's RMVPE claim, tested\n\nClaimed figures come from "
            "`references/original_benchmarks.csv` (transcribed from the earlier port's document, with its "
            "provenance). Different devices measure different things: compare like with like.\n\n"
            + table(pd.DataFrame(rows)))


def render(store_dir: str | Path, figures_dir: Path | None = None, figure_prefix: str = "figures") -> str:
    st = run_store.read(store_dir)
    if st.rows.empty:
        raise ReportError(f"no readable runs in {store_dir}" + (f" ({'; '.join(st.problems)})" if st.problems else ""))
    rows = latest(st.rows)
    summary = summarise(rows)
    parts = ["# rvc-bench — MLX against PyTorch, stage by stage\n",
             "<!-- Generated by `rvc-bench report` from the run store; every number below comes from stored rows. "
             "Do not edit by hand. -->\n",
             f"Source: {len(summary.run_id.unique())} run(s) from `{Path(store_dir).as_posix()}`; for each measurement "
             "the newest run that has it.\n"]
    if st.problems:
        parts.append("Unreadable run files (skipped): " + "; ".join(f"`{p}`" for p in st.problems) + "\n")
    parts += [machines_section(summary, st.runs), overview_section(summary),
              speed_section(summary, "rmvpe", "RMVPE pitch detection: MLX against PyTorch"),
              speed_section(summary, "hubert", "HuBERT encoding: MLX against PyTorch"),
              speed_section(summary, "synth", "RVC synthesis: MLX against PyTorch"),
              speed_section(summary, "mel", "Mel spectrogram: MLX against PyTorch"),
              speed_section(summary, "pipeline", "Full RVC pipeline, end to end: MLX against PyTorch"),
              components_section(summary), memory_section(summary), cold_section(summary),
              parity_section(rows), claims_section(summary)]
    if figures_dir is not None:
        from rvc_bench import plots

        names = plots.write_all(summary, figures_dir)
        parts.append("## Figures\n\n" + "\n".join(f"![{n}]({figure_prefix}/{n})" for n in names) + "\n")
    return "\n".join(p for p in parts if p)


def outputs(out: str | Path) -> list[Path]:
    """Every file write(store, out) writes: the document and its figures beside it."""
    from rvc_bench import plots

    return [Path(out)] + [Path(out).parent / "figures" / name for name in plots.FIGURES]


def write(store_dir: str | Path, out: str | Path) -> Path:
    """Render and write the report atomically (and its figures beside it); nothing is written on failure."""
    out = Path(out)
    text = render(store_dir, out.parent / "figures")
    atomic_write_bytes(out, text.encode())
    return out
