"""reports/BENCHMARKS.md from the run store alone: `render` is a pure function of the stored rows and the
published figures in references/ (no model code, no clock) and writes nothing; `write` writes the document and its
figures; `check` says whether a committed document is what the store generates.

The document: a summary first (per machine: speedups with intervals, parity verdicts, published claims), the runs
with their status, then one section per machine and model size holding every table of the original document, then
what compares across machines (absolute numbers side by side, never divided). Ratios follow rvc_bench.results'
pairing rule. A table without data says which command fills it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rvc_bench import results
from rvc_bench import store as run_store
from rvc_bench.backends import REFERENCES
from rvc_bench.fileio import atomic_write_bytes
from rvc_bench.resources import reference

TITLES = {"mel": "Log-mel (RMVPE front end)", "rmvpe": "RMVPE pitch", "hubert": "HuBERT/ContentVec features",
          "synth": "RVC synthesis", "pipeline": "Full pipeline"}
BACKEND_TITLES = {"torch": "PyTorch", "mlx": "MLX", "onnx": "ONNX Runtime", "numpy": "numpy"}
GRID = (5.0, 60.0, 300.0)  # the original document's lengths
RUN = "rvc-bench run"
NOTE_SPEEDUP = ("Speedup = PyTorch time / the other backend's time (> 1: faster than PyTorch), the ratio of the two "
                "medians over timed rounds (at a length timed once, of the two first calls), with a 95 % interval from "
                "a seeded bootstrap over rounds; both sides come from the same run.")
NOTE_TIME = ("Times: median over timed rounds after warm-up [interquartile range]; a length a run timed once (its "
             "`--rounds` 0 there) shows the first call, marked as such.")
NOTE_RTF = ("Realtime factor RTF = processing time / audio duration (below 1 is faster than real time); the only "
            "realtime measure in this document.")


class ReportError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Formatting: three significant figures with a unit, fixed rules, so the same numbers always give the same text.


def sig(x: float, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "∞" if x is not None and np.isinf(x) and x > 0 else "–"
    if x == 0:
        return "0"
    exp = math.floor(math.log10(abs(x)))
    if exp >= 4 or exp < -3:
        mantissa, e = f"{x:.{digits - 1}e}".split("e")
        return f"{mantissa}e{int(e)}"
    decimals = digits - 1 - exp  # negative: round to tens, hundreds, ...
    return f"{round(x, decimals):.{max(decimals, 0)}f}"


def exact(x: float) -> str:
    """A stated constant (a parity bound) in its shortest exact form: rounding 0.9999 to 1.000 would misstate it."""
    return f"{x:g}".replace("e-0", "e-").replace("e+0", "e+")


def _scaled(x: float, units: tuple) -> str:
    """x in the largest unit it reaches (else the smallest), three significant figures."""
    if x is None or not np.isfinite(x):
        return "–"
    scale, unit = next(((scale, unit) for scale, unit in units if abs(x) >= scale), units[-1])
    return f"{sig(x / scale)} {unit}"


def fmt_time(s: float) -> str:
    return _scaled(s, ((1, "s"), (1e-3, "ms"), (1e-6, "µs")))


def fmt_time_iqr(med: float, q1: float, q3: float) -> str:
    if not np.isfinite(med):
        return "–"
    return f"{fmt_time(med)} [{fmt_time(q1)}–{fmt_time(q3)}]"


def fmt_line(c, iqr: bool = True) -> str:
    """A benchmark line's time (a row of results.lines, as a Series or a named tuple): the warm median [IQR], or at
    a length timed once its first call, marked so that it is never read as a warm time."""
    get = c.__getitem__ if isinstance(c, pd.Series) else lambda k: getattr(c, k)
    if get("first_only"):  # its median is that first call
        return f"{fmt_time(get('median'))} (first call only)"
    return fmt_time_iqr(get("median"), get("q1"), get("q3")) if iqr else fmt_time(get("median"))


def later_calls(c, what) -> str:
    """The warm time, or why there is none (a length timed once)."""
    return "not timed (first call only)" if c.first_only else what


def fmt_bytes(b: float) -> str:
    return _scaled(b, ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")))


def fmt_ratio(r: float, lo: float, hi: float) -> str:
    if not np.isfinite(r):
        return "–"
    return f"{sig(r)}× ({sig(lo)}–{sig(hi)})"


def fmt_len(s: float) -> str:
    return f"{s:g} s" if s < 60 or s % 60 else f"{s / 60:g} min"


def fmt_counts(counts) -> str:
    """Rounds of a run: one number, or one per length ("7/3/2", in the order of the run's lengths)."""
    return "/".join(map(str, counts)) if isinstance(counts, list) else str(counts)


def table(records: list[dict]) -> str:
    """Markdown from records; a column a record lacks shows "–"."""
    return pd.DataFrame(records).fillna("–").to_markdown(index=False, disable_numparse=True) + "\n"


def empty(what: str, command: str) -> str:
    return f"*Not in the store: {what}. `{command}` fills it.*\n"


def col(backend: str, device: str) -> str:
    return f"{BACKEND_TITLES.get(backend, backend)} ({device})"


# ---------------------------------------------------------------------------------------------------------------
# Published figures (references/original_benchmarks.csv)


def published() -> pd.DataFrame:
    text = reference("original_benchmarks.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    df = pd.DataFrame(rows)
    df["value"] = df.value.astype(float)
    df["audio_seconds"] = pd.to_numeric(df.audio_seconds, errors="coerce")
    return df


def pub(p: pd.DataFrame, table_name: str, stage: str, backend: str, metric: str = "time", seconds=None) -> str:
    hit = p[(p.table == table_name) & (p.stage == stage) & (p.backend == backend) & (p.metric == metric)]
    if seconds is not None:
        hit = hit[hit.audio_seconds == seconds]
    return "; ".join(hit.shown) if len(hit) else "–"


# ---------------------------------------------------------------------------------------------------------------
# The data behind one section (one machine, one model size)


@dataclass
class Section:
    machine_id: str
    model_size: str
    lines: pd.DataFrame  # results.lines of the newest run per measurement
    rows: pd.DataFrame  # the stored rows of those same runs and measurements
    runs: dict  # run_id -> RunInfo
    every: pd.DataFrame  # results.lines of every run of this machine and model size (for ratios inside a run)
    speed: pd.DataFrame = field(init=False)

    def __post_init__(self):
        self.speed = results.speedups(self.lines)

    @property
    def full(self) -> bool:
        """Published figures and the original's length grid only make sense beside full-size models."""
        return self.model_size == "full"

    @property
    def slug(self) -> str:
        return f"{self.machine_id}-{self.model_size}"

    @property
    def machine(self) -> dict:
        for run_id in results.runs_of(self.lines):
            if self.runs[run_id].meta.get("machine"):
                return self.runs[run_id].meta["machine"]
        return {}

    @property
    def title(self) -> str:
        size = "full-size models" if self.model_size == "full" else \
            f"{self.model_size} models (a smoke test: not comparable with full-size numbers)"
        return f"Machine `{self.machine_id}`: {describe_machine(self.machine)} — {size}"

    def columns(self) -> list[tuple[str, str]]:
        """(backend, device) pairs measured in this section (not the numpy references), PyTorch first; a backend
        its runs planned but never stored gets a column too (device "–"), so that its absence shows."""
        measured = self.lines[~self.lines.backend.isin(REFERENCES)]
        pairs = set(measured[["backend", "device"]].drop_duplicates().itertuples(index=False, name=None))
        measured = {b for b, _ in pairs}
        for run_id in results.runs_of(self.lines):
            pairs |= {(b, "–") for b in self.runs[run_id].planned_backends if b not in measured}
        return sorted(pairs, key=lambda p: (p[0] != results.REFERENCE_BACKEND, p[0], p[1]))

    def stage_lines(self, stage: str, variant: str | None = None) -> pd.DataFrame:
        s = self.lines[self.lines.stage == stage]
        return s if variant is None else s[s.variant == variant]

    def main_variant(self, stage: str) -> str | None:
        """The variant a stage's tables show: the plain one (not a chunking variant) measured at the most lengths,
        and of those the one measured most recently (a renamed variant's older rows stay in the store)."""
        s = self.stage_lines(stage)
        s = s[~s.variant.map(chunking_variant)]
        if s.empty:
            return None
        counts = s.groupby("variant").audio_seconds.nunique()
        newest = s.groupby("variant").started_at.max()
        return max(counts.index, key=lambda v: (counts[v], newest[v], v))

    def cell(self, stage: str, variant: str, seconds: float, backend: str, device: str) -> pd.Series | None:
        s = self.lines
        hit = s[(s.stage == stage) & (s.variant == variant) & (s.audio_seconds == seconds) & (s.backend == backend)
                & (s.device == device)]
        return hit.iloc[0] if len(hit) else None

    def missing_text(self, stage: str, variant: str, seconds: float, backend: str) -> str:
        """Why a cell is empty: its run did not store it (incomplete) or never planned it."""
        s = self.lines
        s = s[(s.stage == stage) & (s.variant == variant) & (s.audio_seconds == seconds)]
        if s.empty:
            return "not measured"
        run = self.runs[s.run_id.iloc[0]]
        other = s[s.backend == backend]
        if len(other):
            return f"measured on {', '.join(sorted(other.device))} only"
        if backend in run.planned_backends and run.missing():
            return f"missing (run `{run.run_id}` incomplete)"
        return "not measured"

    def time_cell(self, stage, variant, seconds, backend, device, iqr: bool = True) -> str:
        c = self.cell(stage, variant, seconds, backend, device)
        if c is None:
            return self.missing_text(stage, variant, seconds, backend)
        return fmt_line(c, iqr)

    def speed_cell(self, stage, variant, seconds, backend, device) -> str:
        s = self.speed
        hit = s[(s.stage == stage) & (s.variant == variant) & (s.audio_seconds == seconds) & (s.backend == backend)
                & (s.device == device)]
        return fmt_ratio(*hit.iloc[0][["speedup", "lo", "hi"]]) if len(hit) else "–"

    def run_cell(self, stage, variant, seconds) -> str:
        s = self.lines
        runs = s[(s.stage == stage) & (s.variant == variant) & (s.audio_seconds == seconds)].run_id.unique()
        return ", ".join(f"`{r}`" for r in sorted(runs)) or "–"

    def lengths(self, stage: str, variant: str | None, grid: tuple = GRID) -> list[float]:
        measured = set(self.stage_lines(stage, variant).audio_seconds) if variant else set()
        return sorted((set(grid) if self.full else set()) | measured)


def describe_machine(m: dict) -> str:
    if not m:
        return "unknown machine"
    parts = [str(m.get("cpu", "?")), f"{m.get('cpu_count', '?')} cores", fmt_bytes(m.get("ram_bytes", math.nan)),
             f"{m.get('system', '?')} {m.get('machine', '')}".strip()]
    if m.get("hw_model"):
        parts.insert(0, m["hw_model"])
    parts += list(m.get("gpus") or [])
    return ", ".join(parts)


def sections_of(st: run_store.Store) -> list[Section]:
    rows = results.newest_rows(st.rows)
    lines, every = results.lines(rows), results.lines(st.rows)
    out = []
    for (machine_id, size), g in lines.groupby(results.SECTION, sort=False):
        r = rows[(rows.machine_id == machine_id) & (rows.model_size == size)]
        e = every[(every.machine_id == machine_id) & (every.model_size == size)].reset_index(drop=True)
        out.append(Section(machine_id, size, g.reset_index(drop=True), r, st.runs, e))
    return sorted(out, key=lambda s: (s.model_size != "full", s.model_size, s.machine_id))


# ---------------------------------------------------------------------------------------------------------------
# Summary


def parity_verdict(sec: Section, stage: str, variant: str, seconds: float) -> str:
    par = results.parity(sec.rows)
    par = par[(par.stage == stage) & (par.variant == variant) & (par.audio_seconds == seconds)
              & par.within_bound.notna()]
    if par.empty:
        return "no bounded parity value"
    bad = par[~par.within_bound.astype(bool)]
    if bad.empty:
        return f"pass ({len(par)} of {len(par)} within bounds)"
    return "FAIL: " + "; ".join(f"{r.backend} {r.metric} {sig(r.value)} (bound {r.bound_op} {exact(r.bound)})"
                                for r in bad.itertuples())


def claims(sec: Section, pubs: pd.DataFrame) -> str:
    """Each published speedup, tested where this section measured the same thing on the same kind of device."""
    cases = []
    for stage, seconds, tname in ([("rmvpe", s, t) for t in ("rmvpe_run1", "rmvpe_run2") for s in GRID]
                                  + [("pipeline", 5.0, "pipeline")]
                                  + [(s, 5.0, "components") for s in ("rmvpe", "hubert", "synth")]):
        p = pubs[(pubs.table == tname) & (pubs.stage == stage) & (pubs.audio_seconds == seconds)
                 & (pubs.metric == "time")].set_index("backend").value
        cases.append((stage, seconds, tname, float(p["torch-mps"] / p["mlx"])))
    if not {("mlx", "gpu"), ("torch", "mps")} <= set(sec.columns()):
        listed = "; ".join(f"{TITLES[stage]} {fmt_len(seconds)} {sig(claim)}× ({tname})"
                           for stage, seconds, tname, claim in cases)
        return ("Published claims (MLX on an Apple GPU against PyTorch MPS: " + listed + ") are not testable on this "
                "machine, which ran " + ", ".join(col(b, d) for b, d in sec.columns()) + ".\n")
    out = []
    for stage, seconds, tname, claim in cases:
        variant = sec.main_variant(stage)
        s = sec.speed
        hit = s[(s.stage == stage) & (s.variant == variant) & (s.audio_seconds == seconds) & (s.backend == "mlx")
                & (s.device == "gpu") & (s.ref_device == "mps")]
        if hit.empty:
            verdict = f"not measured here (`{RUN} --stages {stage} --lengths {seconds:g}` tests it)"
        else:
            r = hit.iloc[0]
            verdict = f"{'held' if r.hi >= claim else 'not held'}: measured {fmt_ratio(r.speedup, r.lo, r.hi)}"
        out.append(f"- {TITLES[stage]} at {fmt_len(seconds)}: MLX {sig(claim)}× as fast as PyTorch MPS (published, "
                   f"{tname}): {verdict}")
    return "Published claims:\n\n" + "\n".join(out) + "\n"


def speed_header(backend: str, device: str) -> str:
    return f"speedup {col(backend, device)}"


def summary(secs: list[Section], pubs: pd.DataFrame) -> str:
    out = ["## Summary\n", NOTE_SPEEDUP + " A claim held when the measured interval reaches the published speedup.\n"]
    for sec in secs:
        cols = sec.columns()
        others = [c for c in cols if c[0] != results.REFERENCE_BACKEND]
        recs = []
        for stage in results.STAGE_ORDER:
            variant = sec.main_variant(stage)
            if variant is None:
                continue
            for seconds in sorted(set(sec.stage_lines(stage, variant).audio_seconds)):
                rec = {"stage": f"{TITLES[stage]} (`{variant}`)", "audio": fmt_len(seconds)}
                for b, d in cols:
                    rec[col(b, d)] = sec.time_cell(stage, variant, seconds, b, d, iqr=False)
                for b, d in others:
                    rec[speed_header(b, d)] = sec.speed_cell(stage, variant, seconds, b, d)
                rec["parity"] = parity_verdict(sec, stage, variant, seconds)
                recs.append(rec)
        out.append(f"### {sec.title}\n")
        out.append(table(recs) if recs else "*No benchmark lines.*\n")
        if sec.full:
            out.append(claims(sec, pubs))
    if not secs:
        out.append(empty("any benchmark", RUN))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Runs


def backend_text(desc: dict) -> str:
    version = desc.get(f"{desc.get('backend')}_version") or desc.get("version") or ""
    text = f"{desc.get('label', desc.get('backend', '?'))} {version}".strip()
    extra = [str(desc[k]) for k in ("torch_blas", "mlx_cpu_blas") if desc.get(k)]
    gflops = desc.get("mlx_cpu_sgemm_gflops") or desc.get("torch_cpu_sgemm_gflops")
    if gflops:
        extra.append(f"sgemm {sig(float(gflops))} GFLOP/s")
    if desc.get("allocator"):
        extra.append(str(desc["allocator"]))
    return text + (f" ({', '.join(extra)})" if extra else "")


def runs_section(st: run_store.Store) -> str:
    recs = []
    for info in sorted(st.runs.values(), key=lambda r: (r.machine_id, r.started_at, r.run_id)):
        rows = st.rows[st.rows.run_id == info.run_id]
        opts = (info.meta or {}).get("options") or (info.plan or {})
        missing = info.missing()
        sizes = sorted(set(rows.model_size)) or [str(opts.get("model_size", "?"))]
        recs.append({
            "machine": f"`{info.machine_id}`", "run": f"`{info.run_id}`", "started (UTC)": info.started_at,
            "commit": (rows.git_commit.iloc[0][:10] + (" (dirty)" if rows.git_dirty.iloc[0] else "")) if len(rows)
            else "–",
            "models": ", ".join(sizes), "rounds": f"{fmt_counts(opts.get('rounds', '?'))} + {fmt_counts(opts.get('warmup', '?'))} warm-up",
            "wall time": "–" if info.wall_seconds() is None else f"{sig(info.wall_seconds() / 60)} min",
            "backends": "; ".join(backend_text(d) for _, d in sorted(info.backends.items())) or "–",
            "status": "complete" if not missing else "**incomplete**: " + "; ".join(missing),
        })
    return "## Runs\n\nEvery run in the store; wall time: from its start to the end of its last process (loading, " \
           "synthetic checkpoints and exports made on the way included). Tables below take, for each measurement, the newest run on that " \
           "machine that measured it, and never combine two runs in one ratio.\n\n" + (table(recs) if recs else "")


# ---------------------------------------------------------------------------------------------------------------
# The original document's tables, for one section


def speed_table(sec: Section, stage: str, pubs: pd.DataFrame, title: str, grid=GRID) -> str:
    variant = sec.main_variant(stage)
    head = f"### {title}\n\n"
    if variant is None:
        return head + empty(f"no {stage} benchmark", f"{RUN} --stages {stage} --lengths "
                            + ",".join(f"{s:g}" for s in grid))
    cols = sec.columns()
    recs = []
    for seconds in sec.lengths(stage, variant, grid):
        rec = {"audio": fmt_len(seconds)}
        for b, d in cols:
            rec[col(b, d)] = sec.time_cell(stage, variant, seconds, b, d)
        for b, d in cols[1:]:
            rec[speed_header(b, d)] = sec.speed_cell(stage, variant, seconds, b, d)
        rec["run"] = sec.run_cell(stage, variant, seconds)
        if stage == "rmvpe" and sec.full:
            runs = []
            for t in ("rmvpe_run1", "rmvpe_run2"):
                m, p = pub(pubs, t, stage, "mlx", seconds=seconds), pub(pubs, t, stage, "torch-mps", seconds=seconds)
                if m != "–":
                    runs.append(f"MLX {m}, PyTorch MPS {p}")
            rec["published (M-series GPU; two runs)"] = " / ".join(runs) or "–"
        recs.append(rec)
    unmeasured = [s for s in sec.lengths(stage, variant, grid) if sec.stage_lines(stage, variant)
                  .pipe(lambda d: d[d.audio_seconds == s]).empty]
    fill = (f"\n`{RUN} --stages {stage} --lengths {','.join(f'{s:g}' for s in unmeasured)}` fills the rows "
            "not measured.\n") if unmeasured else ""
    return head + f"Variant `{variant}`. {NOTE_TIME}\n\n" + table(recs) + fill


def pipeline_table(sec: Section, pubs: pd.DataFrame) -> str:
    head = "### Full RVC pipeline, end to end\n\n"
    variant = sec.main_variant("pipeline")
    if variant is None:
        return head + empty("no pipeline benchmark", f"{RUN} --stages pipeline")
    recs = []
    for seconds in sec.lengths("pipeline", variant, grid=()):
        for b, d in sec.columns():
            c = sec.cell("pipeline", variant, seconds, b, d)
            recs.append({"backend": col(b, d), "audio": fmt_len(seconds),
                         "time": fmt_line(c) if c is not None
                         else sec.missing_text("pipeline", variant, seconds, b),
                         "RTF": sig(c["median"] / seconds) if c is not None else "–",
                         "first call": fmt_time(c.cold) if c is not None else "–",
                         "run": sec.run_cell("pipeline", variant, seconds)})
    for b, name in (("torch-mps", "PyTorch MPS"), ("mlx", "MLX")) if sec.full else ():
        recs.append({"backend": f"{name} (published, M-series)", "audio": "5 s",
                     "time": pub(pubs, "pipeline", "pipeline", b, seconds=5.0), "RTF": "–", "first call": "–",
                     "run": "original document"})
    return head + (f"Variant `{variant}`: front end, RMVPE, HuBERT, retrieval, synthesis and the chunk loop, "
                   f"from decoded 16 kHz audio. {NOTE_TIME} {NOTE_RTF}\n\n") + table(recs)


def components_table(sec: Section, pubs: pd.DataFrame, seconds: float = 5.0) -> str:
    head = f"### Component breakdown ({fmt_len(seconds)} of audio)\n\n"
    cols = sec.columns()
    if sec.lines[sec.lines.audio_seconds == seconds].empty:
        return head + empty(f"no benchmark at {fmt_len(seconds)}", RUN)
    recs = [{"component": "Audio loading", **{col(b, d): "not measured (benchmarks start from decoded audio)"
                                             for b, d in cols}, **{speed_header(b, d): "–" for b, d in cols[1:]}}]
    if sec.full:
        recs[0]["published MLX / PyTorch MPS"] = (f"{pub(pubs, 'components', 'audio_loading', 'mlx')} / "
                                                  f"{pub(pubs, 'components', 'audio_loading', 'torch-mps')}")
    for stage, pstage in (("mel", None), ("hubert", "hubert"), ("rmvpe", "rmvpe"), ("synth", "synth"),
                          ("pipeline", "total")):
        variant = sec.main_variant(stage)
        name = TITLES[stage] + (" (end to end: the total)" if stage == "pipeline" else "")
        rec = {"component": name + (f" `{variant}`" if variant else "")}
        for b, d in cols:
            rec[col(b, d)] = sec.time_cell(stage, variant, seconds, b, d) if variant else \
                f"not measured (`{RUN} --stages {stage}`)"
        for b, d in cols[1:]:
            rec[speed_header(b, d)] = sec.speed_cell(stage, variant, seconds, b, d) if variant else "–"
        if sec.full:
            rec["published MLX / PyTorch MPS"] = (f"{pub(pubs, 'components', pstage, 'mlx')} / "
                                                  f"{pub(pubs, 'components', pstage, 'torch-mps')}") if pstage else "–"
        recs.append(rec)
    return head + ("Each stage timed on its own; RMVPE's time includes its log-mel front end, and the pipeline "
                   "row is measured end to end (it also pads, retrieves and loops over chunks), so the stage "
                   f"times do not add up to it. {NOTE_TIME}\n\n") + table(recs)


def mel_table(sec: Section, pubs: pd.DataFrame) -> str:
    head = "### Mel spectrogram front end: numpy on the CPU against on-device\n\n"
    variant = sec.main_variant("mel")
    if variant is None:
        return head + empty("no mel benchmark", f"{RUN} --stages mel")
    recs = []
    for seconds in sec.lengths("mel", variant, grid=()):
        for b, d in sec.columns():
            c = sec.cell("mel", variant, seconds, b, d)
            recs.append({"backend": col(b, d), "audio": fmt_len(seconds),
                         "first call": fmt_time(c.cold) if c is not None else "–",
                         "later calls": later_calls(c, fmt_line(c)) if c is not None
                         else sec.missing_text("mel", variant, seconds, b),
                         "first / later": later_calls(c, f"{sig(c.cold / c['median'])}×") if c is not None else "–",
                         "run": sec.run_cell("mel", variant, seconds)})
    references = sec.stage_lines("mel")[sec.stage_lines("mel").backend.isin(REFERENCES)]
    for r in references.itertuples():
        recs.append({"backend": f"{col(r.backend, r.device)}, float64 reference", "audio": fmt_len(r.audio_seconds),
                     "first call": fmt_time(r.cold), "later calls": later_calls(r, fmt_line(r)),
                     "first / later": later_calls(r, f"{sig(r.cold / r.median)}×"), "run": f"`{r.run_id}`"})
    if references.empty:
        recs.append({"backend": "numpy (cpu), float64 reference", "audio": "–", "first call": "not measured",
                     "later calls": "not measured", "first / later": "–",
                     "run": f"`{RUN} --stages mel` (with the torch backend)"})
    for b, name in (("librosa-cpu", "librosa on the CPU"), ("mlx", "MLX")) if sec.full else ():
        recs.append({"backend": f"{name} (published, M-series)", "audio": "not stated",
                     "first call": pub(pubs, "mel", "mel", b, "time_cold"),
                     "later calls": pub(pubs, "mel", "mel", b, "time_warm"), "first / later": "–",
                     "run": "original document"})
    return head + ("First call: the first call after the model is built (kernel compilation and allocator warm-up "
                   f"included). {NOTE_TIME}\n\n") + table(recs)


def chunking_variant(variant: str) -> bool:
    """A variant measured for the chunking table ("chunked-*", "whole", "*-whole"), beside a stage's main one."""
    return variant.startswith("chunked") or variant.endswith("whole")


CHUNKING_STAGES = {"rmvpe": "RMVPE: whole sequence against chunked", "synth": "Synthesizer: decoder in one pass "
                   "against time tiles"}
CHUNKING_NOTE = ("Each row is the stage on one backend; max abs Δ is against another variant of the same backend (the "
                 "one named): for RMVPE the salience (the default `e2e` runs the U-Net of inputs longer than one "
                 "window of 2944 frames + 1600 of overlap per side (full size: its receptive field) in such chunks "
                 "and the BiGRU over the whole sequence, which computes the whole pass's numbers; `*-cut-gru` and "
                 "`*-no-overlap` run the whole network per chunk, cutting the BiGRU's state: the old default and the "
                 "original port, measured to show what that costs; on the benchmark's synthetic weights, whose BiGRU forgets "
                 "within a few frames, cutting it costs little, on weights that remember it does not: see "
                 "suites/test_rmvpe.py), for the synthesizer the waveform.")


def chunking_table(sec: Section) -> str:
    out = []
    for stage, title in CHUNKING_STAGES.items():
        head = f"#### {title}\n\n"
        s = sec.stage_lines(stage)
        if not s.variant.map(chunking_variant).any():
            out.append(head + empty(f"no chunking variant of {stage} beside its main one",
                                    f"{RUN} --stages {stage} --lengths 5,60,300"))
            continue
        par = results.parity(sec.rows)
        par = par[par.reference.map(results.same_backend_reference) & (par.metric == "max_abs")]
        recs = []
        for r in s.sort_values(["audio_seconds", "backend", "device", "variant"]).itertuples():
            p = par[(par.stage == stage) & (par.variant == r.variant) & (par.audio_seconds == r.audio_seconds)
                    & (par.backend == r.backend) & (par.device == r.device)]
            recs.append({"audio": fmt_len(r.audio_seconds), "backend": col(r.backend, r.device),
                         "variant": f"`{r.variant}`", "time": fmt_line(r),
                         "framework peak": fmt_bytes(r.mem), "RSS Δ peak": fmt_bytes(r.rss),
                         "max abs Δ": f"{sig(p.value.iloc[0])} vs `{p.reference.iloc[0]}`" if len(p) else "–"})
        out.append(head + table(recs))
    return f"### Chunking: whole against chunked\n\n{CHUNKING_NOTE} {NOTE_TIME}\n\n" + "\n".join(out)


SCALING_STAGES = ("rmvpe", "hubert", "synth", "pipeline")
SCALING_NOTE = ("Time(5 min) / time(5 s) of the main variant's median, against the linear 60× (goal: within ±15 %), "
                "and time(5 min) / time(1 min) against 5×: HuBERT, the synthesizer and the pipeline work in the "
                "pipeline's windows of at most 41 s, each with attention over its whole window, so their cost per "
                "second of audio grows up to one window and should be flat past it; "
                "a length timed once enters with its first call, and the cell says so (a first call includes its "
                "one-time overhead: the first-run table shows it at the shortest length); "
                "peak memory at 5 min over 1 min (goal: ≤ 1.2×, flat past one window), by the framework's counter "
                "and the process's RSS Δ. Each ratio is formed inside the run of the 5 min row, even where a newer run "
                "measured a shorter length again (`–`: that run did not measure the other length).")


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
    label = "" if kinds == ["warm", "warm"] else \
        ", first calls" if kinds[0] == kinds[1] else f", {kinds[0]} / {kinds[1]}"
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
            e = sec.every
            same = e[(e.run_id == c300.run_id) & (e.stage == stage) & (e.variant == variant) & (e.backend == b)
                     & (e.device == d)]
            c5, c60 = (same[same.audio_seconds == t].iloc[0] if (same.audio_seconds == t).any() else None
                       for t in (5.0, 60.0))
            get = lambda c, k: c[k] if c is not None else math.nan  # noqa: E731
            recs.append({"stage": TITLES[stage], "variant": f"`{variant}`", "backend": col(b, d),
                         "time 5 min / 5 s (linear 60×)": time_ratio(c300, c5, 60),
                         "time 5 min / 1 min (linear 5×)": time_ratio(c300, c60, 5),
                         "framework peak 5 min / 1 min": ratio_text(get(c300, "mem"), get(c60, "mem")),
                         "RSS Δ 5 min / 1 min": ratio_text(get(c300, "rss"), get(c60, "rss"))})
    if not recs:
        return head + empty("no stage measured at 5 min", f"{RUN} --lengths 5,60,300")
    return head + f"{SCALING_NOTE}\n\n" + table(recs)


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
            text = (f"{fmt_bytes(c.mem)} / {fmt_bytes(c.rss)} / {fmt_bytes(c.rss_fresh)}" if c is not None
                    else sec.missing_text(stage, variant, seconds, b))
            rec[f"{col(b, d)}: framework peak / RSS Δ / fresh-process RSS"] = text
        if sec.full and stage == "rmvpe":
            rec["published MLX / PyTorch MPS"] = (f"{pub(pubs, 'memory', stage, 'mlx', 'memory', seconds)} / "
                                                  f"{pub(pubs, 'memory', stage, 'torch-mps', 'memory', seconds)}")
        elif sec.full:
            rec["published (backend not stated)"] = pub(pubs, "memory", stage, "unspecified", "memory", seconds)
        recs.append(rec)
    return head + table(recs)


def memory_section(sec: Section, pubs: pd.DataFrame) -> str:
    return ("### Memory\n\nFramework peak: the framework's own counter (MLX peak memory; torch CUDA max allocated; "
            "torch MPS current allocation sampled every 2 ms; none for torch on the CPU, nor for ONNX Runtime, whose "
            "Python API has no memory statistics). RSS Δ: process high-water "
            "mark during the first call minus RSS before it. Fresh-process RSS: peak RSS of a new process that "
            f"imports one framework, loads the model and calls it once (`{RUN} --fresh-process`). Different "
            "quantities: never added.\n\n" + memory_table(sec, "rmvpe", pubs) + "\n" + memory_table(sec, "pipeline", pubs))


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
            recs.append({"model": f"{TITLES[stage]} `{variant}`", "backend": col(r.backend, r.device),
                         "audio": fmt_len(r.audio_seconds),
                         "first call, fresh process": fmt_time(fresh) if np.isfinite(fresh) else "not measured",
                         "first call in the benchmark process": fmt_time(r.cold),
                         "later calls": later_calls(r, fmt_time(r.median)),
                         "overhead (fresh first call − later)": later_calls(r, fmt_time(fresh - r.median))
                         if np.isfinite(fresh) else "–",
                         "published (MLX)": (f"{pub(pubs, 'first_run', stage, 'mlx', 'cold_overhead')}, "
                                             f"{pub(pubs, 'first_run', stage, 'mlx', 'cold_over_warm')}")
                         if stage in ("rmvpe", "hubert", "synth") and r.backend == "mlx" and sec.full else "–"})
    if not recs:
        return head + empty("no benchmark", f"{RUN} --fresh-process")
    fill = "" if sec.lines.cold_fresh.notna().any() else \
        f"\nThe fresh-process column is empty: `{RUN} --fresh-process` fills it.\n"
    return head + ("A fresh process imports one framework, loads the model and calls it once: its first call is "
                   "the cold start a user sees. The benchmark process's first call comes after other lengths or "
                   "stages may have warmed shared kernels.\n\n") + table(recs) + fill


def accuracy_section(sec: Section, pubs: pd.DataFrame) -> str:
    par = results.parity(sec.rows)
    out = ["### Numerical accuracy\n\nEvery timed output against its reference from the same run (each backend "
           "against PyTorch; the log-mel against float64 numpy). Bounds: `references/parity_tolerances.csv` as stored "
           "with each value (a value held to a bound of its own backend shows it beside the value); definitions: "
           "`rvc_bench/parity.py`.\n"]
    if par.empty:
        return out[0] + "\n" + empty("no parity value", RUN)
    for stage in sorted(par.stage.unique(), key=lambda s: results.STAGE_ORDER.get(s, 99)):
        p = par[par.stage == stage]
        keys = p[["backend", "device", "reference", "variant", "audio_seconds"]].drop_duplicates() \
            .sort_values(["backend", "device", "variant", "audio_seconds"]).itertuples(index=False)
        keys = list(keys)
        # each metric's column bound: the one most of its values were held to (a backend's own bound shows in its cell)
        bounded = p[p.within_bound.notna()]
        bounded = bounded.assign(n=bounded.groupby(["metric", "bound_op", "bound"]).value.transform("size")) \
            .sort_values(["metric", "n", "bound"], ascending=[True, False, True]).drop_duplicates("metric") \
            .set_index("metric")
        metrics = sorted(p.metric.unique(), key=lambda m: (m not in bounded.index, m))
        recs = []
        for m in metrics:
            rec = {"metric": m, "bound": f"{bounded.at[m, 'bound_op']} {exact(bounded.at[m, 'bound'])}"
                   if m in bounded.index else "–"}
            for k in keys:
                hit = p[(p.metric == m) & (p.backend == k.backend) & (p.device == k.device) & (p.variant == k.variant)
                        & (p.audio_seconds == k.audio_seconds)]
                name = f"{col(k.backend, k.device)} vs {k.reference}, `{k.variant}` {fmt_len(k.audio_seconds)}"
                if hit.empty:
                    rec[name] = "–"
                else:
                    h = hit.iloc[0]
                    verdict = "" if pd.isna(h.within_bound) else (" pass" if h.within_bound else " **FAIL**")
                    own = m in bounded.index and pd.notna(h.within_bound) and h.bound != bounded.at[m, "bound"]
                    rec[name] = sig(h.value) + verdict + (f" (bound {h.bound_op} {sig(h.bound)})" if own else "")
            recs.append(rec)
        published = {"rmvpe": pub(pubs, "accuracy", "rmvpe", "mlx", "voiced_detection_error"),
                     "pipeline": pub(pubs, "accuracy", "pipeline", "mlx", "correlation")}.get(stage)
        note = f"\nPublished (original document, MLX): {published}.\n" if published and sec.full else ""
        out.append(f"#### {TITLES.get(stage, stage)}\n\n" + table(recs) + note)
    return "\n".join(out)


def hardware_table(sec: Section) -> str:
    """The original's "Hardware Specifications", from the newest run of the section."""
    info = sec.runs[results.runs_of(sec.lines)[-1]]
    m = info.meta.get("machine") or {}
    libs = ", ".join(f"{k} {v}" for k, v in sorted((m.get("libraries") or {}).items()) if v)
    recs = [("chip / CPU", " ".join(x for x in (m.get("hw_model"), m.get("cpu")) if x) or "?"),
            ("cores, memory", f"{m.get('cpu_count', '?')} cores, {fmt_bytes(m.get('ram_bytes', math.nan))}"),
            ("GPUs", ", ".join(m.get("gpus") or []) or "none found"),
            ("OS", " ".join(str(x) for x in (m.get("system"), m.get("macos") or m.get("release"), m.get("machine"))
                            if x)),
            ("Python, libraries", f"Python {m.get('python', '?')}; {libs}"),
            ("backends", "; ".join(backend_text(d) for _, d in sorted(info.backends.items())) or "–")]
    return (f"### Hardware and software (run `{info.run_id}`)\n\n"
            + table([{"": k, "value": v} for k, v in recs]))


def machine_section(sec: Section, pubs: pd.DataFrame, figures: dict) -> str:
    parts = [f"## {sec.title}\n\nRuns " + ", ".join(f"`{r}`" for r in results.runs_of(sec.lines)) + ".\n",
             hardware_table(sec),
             speed_table(sec, "rmvpe", pubs, "RMVPE pitch detection"),
             pipeline_table(sec, pubs), components_table(sec, pubs), mel_table(sec, pubs), chunking_table(sec), scaling_table(sec),
             memory_section(sec, pubs), first_run_table(sec, pubs), accuracy_section(sec, pubs)]
    for stage in ("hubert", "synth"):
        if sec.main_variant(stage):
            parts.append(speed_table(sec, stage, pubs, TITLES[stage], grid=()))
    names = [f"{sec.slug}-{kind}.png" for kind in ("time", "speedup", "memory", "parity")]
    for name in names:
        figures[name] = FigureSpec(name, name.rsplit("-", 1)[1][:-4], sec)
    parts.append("### Figures\n\n" + "\n".join(f"![{n}](figures/{n})" for n in names) + "\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Across machines: absolute numbers side by side, never divided


def across_machines(secs: list[Section]) -> str:
    full = [s for s in secs if s.model_size == "full"]
    if len(full) < 2:
        return ""
    recs = {}
    for i, sec in enumerate(full):
        for r in sec.lines.itertuples():
            key = (results.STAGE_ORDER.get(r.stage, 99), r.stage, r.variant, r.audio_seconds)
            rec = recs.setdefault(key, {"stage": f"{TITLES.get(r.stage, r.stage)} `{r.variant}`",
                                        "audio": fmt_len(r.audio_seconds)})
            rec[f"`{sec.machine_id}` {col(r.backend, r.device)}"] = fmt_line(r, iqr=False)
    return ("## Across machines\n\nMedian times of full-size runs, side by side. Different machines are never "
            "divided into each other: compare speedups only inside each machine's section.\n\n"
            + table([recs[k] for k in sorted(recs)]))


# The original document's backend summary: its rows, what each was measured on, and which stored lines measure the
# same thing (backend, device, and for MLX the Apple GPU it was published for).
ORIGINAL_BACKENDS = (
    ("torch-cpu", "PyTorch CPU", "Any", lambda r, m: (r.backend, r.device) == ("torch", "cpu")),
    ("torch-cuda", "PyTorch CUDA (GPU)", "NVIDIA", lambda r, m: (r.backend, r.device) == ("torch", "cuda")),
    ("torch-mps", "PyTorch MPS", "Apple Silicon", lambda r, m: (r.backend, r.device) == ("torch", "mps")),
    ("mlx", "MLX", "Apple Silicon", lambda r, m: (r.backend, r.device, m.get("system")) == ("mlx", "gpu", "Darwin")),
    ("onnx", "ONNX Runtime", "Any", lambda r, m: r.backend == "onnx"))


def backend_parity(sec: Section, stage: str, variant: str, seconds: float, backend: str, device: str) -> str:
    """One backend's parity verdict on one benchmark line (the reference backend has none)."""
    if backend == results.REFERENCE_BACKEND:
        return "reference"
    par = results.parity(sec.rows)
    par = par[(par.stage == stage) & (par.variant == variant) & (par.audio_seconds == seconds)
              & (par.backend == backend) & (par.device == device)]
    tied = par[par.metric == "frames_apart_tied"].value
    par = par[par.within_bound.notna()]
    if par.empty:
        return "no bounded parity value"
    bad = par[~par.within_bound.astype(bool)]
    ties = f" ({sig(tied.iloc[0])} of the frames apart are pitch ties at float32)" if len(tied) else ""
    return f"pass ({len(par)} of {len(par)})" if bad.empty else \
        "FAIL: " + "; ".join(f"{r.metric} {sig(r.value)}" for r in bad.itertuples()) + ties


def backend_summary(secs: list[Section], pubs: pd.DataFrame, seconds: float = 5.0) -> str:
    measured = []  # (section, line) of every full-size pipeline line at `seconds`
    for sec in secs:
        if sec.full:
            lines = sec.stage_lines("pipeline")
            measured += [(sec, r) for r in lines[lines.audio_seconds == seconds].itertuples()]
    measured.sort(key=lambda m: (m[0].machine_id, m[1].backend != results.REFERENCE_BACKEND, m[1].backend, m[1].device))
    recs = [{"backend": col(r.backend, r.device), "machine": f"`{sec.machine_id}`: {describe_machine(sec.machine)}",
             f"pipeline time ({fmt_len(seconds)})": fmt_line(r), "RTF": sig(r.median / seconds),
             "memory: framework peak / RSS Δ": f"{fmt_bytes(r.mem)} / {fmt_bytes(r.rss)}",
             "parity against PyTorch": backend_parity(sec, "pipeline", r.variant, seconds, r.backend, r.device),
             "run": f"`{r.run_id}`"} for sec, r in measured]
    if not recs:
        recs = [{"backend": "–", f"pipeline time ({fmt_len(seconds)})":
                 f"not measured (`{RUN} --stages pipeline`, full-size models)"}]
    original = []
    for key, name, platform, same in ORIGINAL_BACKENDS:
        hits = [f"{col(r.backend, r.device)} on `{sec.machine_id}`: {fmt_line(r, iqr=False)}" for sec, r in measured
                if same(r, sec.machine)]
        original.append({"backend (original document)": name, "platform": platform,
                         "published time": pub(pubs, "backends", "pipeline", key),
                         "published memory": pub(pubs, "backends", "pipeline", key, "memory"),
                         "measured in this store": "; ".join(hits) or "not measured on any machine in the store"})
    return ("## Backend summary\n\nEvery backend and device measured: the full pipeline on "
            f"{fmt_len(seconds)} of audio with full-size models, each row from its machine's newest run (rows of one "
            f"run were measured side by side). {NOTE_TIME} Memory as in each machine's memory table (ONNX Runtime and "
            "torch on the CPU have no framework counter). Parity: the pipeline's bounds in "
            "`references/parity_tolerances.csv`.\n\n" + table(recs)
            + "\nThe original document's backend summary (Apple M-series; its figures as printed, most with a "
            "\"~\"), and what this store measured of each row:\n\n" + table(original))


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FigureSpec:
    """What one figure shows; rvc_bench.plots draws it (only `write` does, `render` never imports matplotlib)."""

    name: str
    kind: str  # time | speedup | memory | parity
    section: Section


@dataclass
class Document:
    text: str
    figures: dict[str, FigureSpec]


def render(store_dir: str | Path) -> Document:
    st = run_store.read(store_dir)
    if st.rows.empty:
        raise ReportError(f"no readable runs in {store_dir}"
                          + (f" ({'; '.join(st.problems)})" if st.problems else ""))
    pubs = published()
    secs = sections_of(st)
    figures: dict[str, FigureSpec] = {}
    machines = len({s.machine_id for s in secs})
    parts = ["# rvc-bench: MLX and ONNX Runtime against PyTorch, stage by stage\n",
             "<!-- Generated by `rvc-bench report` from the run store alone; `rvc-bench report --check` fails when "
             "this file differs from what the store generates. Do not edit by hand. -->\n",
             f"{len(st.runs)} run(s) on {machines} machine(s). Published figures of the original MLX port "
             "(`references/original_benchmarks.csv`: Apple M-series, 2026-01-06) appear beside measured ones, "
             "always marked as published.\n"]
    if st.problems:
        parts.append("Unreadable store files (skipped): " + "; ".join(f"`{p}`" for p in st.problems) + "\n")
    parts += [summary(secs, pubs), runs_section(st)]
    parts += [machine_section(sec, pubs, figures) for sec in secs]
    parts += [across_machines(secs), backend_summary(secs, pubs)]
    return Document("\n".join(p for p in parts if p), figures)


def outputs(out: str | Path) -> tuple[Path, Path]:
    """What `write(store, out)` writes: the document, and the folder its figures go into (names from the store)."""
    return Path(out), Path(out).parent / "figures"


def write(store_dir: str | Path, out: str | Path) -> Path:
    """Render, then write the document and its figures (atomically each); nothing is written if rendering fails."""
    from rvc_bench import plots

    out = Path(out)
    doc = render(store_dir)
    pngs = {name: plots.png(spec) for name, spec in doc.figures.items()}
    for name, data in pngs.items():
        atomic_write_bytes(out.parent / "figures" / name, data)
    atomic_write_bytes(out, doc.text.encode())
    return out


def check(store_dir: str | Path, committed: str | Path) -> str | None:
    """None when `committed` is exactly what the store generates, else a one-line reason."""
    committed = Path(committed)
    if not committed.is_file():
        return f"{committed} does not exist"
    want, have = render(store_dir).text, committed.read_text(encoding="utf-8")
    if want == have:
        return None
    a, b = have.splitlines(), want.splitlines()
    line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"{committed} differs from what the store generates (first difference at line {line + 1})"
