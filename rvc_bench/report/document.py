"""The whole document, rendered from the data it is given (the store's rows and runs, the published figures):
a pure function, no file read, no clock. The summary and runs first, one section per machine and model size,
then what compares across machines (absolute numbers side by side, never divided)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from rvc_bench import results
from rvc_bench import store as run_store
from rvc_bench.report import notes
from rvc_bench.report.formatting import RUN, TITLES, col, describe_machine, fmt_bytes, fmt_len, fmt_line, sig, table
from rvc_bench.report.query import Section, pub, sections_of, select
from rvc_bench.report.sections import FigureSpec, figures_of, machine_section
from rvc_bench.report.summary import runs_section, summary, verdict


@dataclass
class Document:
    text: str
    figures: dict[str, FigureSpec]


def across_machines(secs: list[Section]) -> str:
    full = [s for s in secs if s.model_size == "full"]
    if len(full) < 2:
        return ""
    recs = {}
    for sec in full:
        for r in sec.lines.itertuples():
            key = (results.STAGE_ORDER.get(r.stage, 99), r.stage, r.variant, r.audio_seconds)
            rec = recs.setdefault(
                key, {"stage": f"{TITLES.get(r.stage, r.stage)} `{r.variant}`", "audio": fmt_len(r.audio_seconds)}
            )
            rec[f"`{sec.machine_id}` {col(r.backend, r.device)}"] = fmt_line(r, iqr=False)
    return f"## Across machines\n\n{notes.ACROSS}\n\n" + table([recs[k] for k in sorted(recs)])


# The original document's backend summary: its rows, what each was measured on, and which stored lines measure the
# same thing (backend, device, and for MLX the Apple GPU it was published for).
ORIGINAL_BACKENDS = (
    ("torch-cpu", "PyTorch CPU", "Any", lambda r, m: (r.backend, r.device) == ("torch", "cpu")),
    ("torch-cuda", "PyTorch CUDA (GPU)", "NVIDIA", lambda r, m: (r.backend, r.device) == ("torch", "cuda")),
    ("torch-mps", "PyTorch MPS", "Apple Silicon", lambda r, m: (r.backend, r.device) == ("torch", "mps")),
    ("mlx", "MLX", "Apple Silicon", lambda r, m: (r.backend, r.device, m.get("system")) == ("mlx", "gpu", "Darwin")),
    ("onnx", "ONNX Runtime", "Any", lambda r, m: r.backend == "onnx"),
)


def backend_parity(sec: Section, stage: str, variant: str, seconds: float, backend: str, device: str) -> str:
    """One backend's parity verdict on one benchmark line (the reference backend has none)."""
    if backend == results.REFERENCE_BACKEND:
        return "reference"
    return verdict(
        sec.parity_of(stage, variant, seconds, backend, device),
        lambda r, ties: f"{r.metric} {sig(r.value)}" + (f" ({ties})" if ties else ""),
    )


def original_backends(measured: list, pubs: pd.DataFrame) -> list[dict]:
    """The original document's backend rows, each with what the store measured of it."""
    recs = []
    for key, name, platform, same in ORIGINAL_BACKENDS:
        hits = [
            f"{col(r.backend, r.device)} on `{sec.machine_id}`: {fmt_line(r, iqr=False)}"
            for sec, r in measured
            if same(r, sec.machine)
        ]
        recs.append(
            {
                "backend (original document)": name,
                "platform": platform,
                "published time": pub(pubs, "backends", "pipeline", key),
                "published memory": pub(pubs, "backends", "pipeline", key, "memory"),
                "measured in this store": "; ".join(hits) or "not measured on any machine in the store",
            }
        )
    return recs


def backend_summary(secs: list[Section], pubs: pd.DataFrame, seconds: float = 5.0) -> str:
    measured = []  # (section, line) of every full-size pipeline line at `seconds`
    for sec in secs:
        if sec.full:
            measured += [(sec, r) for r in select(sec.lines, stage="pipeline", audio_seconds=seconds).itertuples()]
    measured.sort(key=lambda m: (m[0].machine_id, m[1].backend != results.REFERENCE_BACKEND, m[1].backend, m[1].device))
    recs = [
        {
            "backend": col(r.backend, r.device),
            "machine": f"`{sec.machine_id}`: {describe_machine(sec.machine)}",
            f"pipeline time ({fmt_len(seconds)})": fmt_line(r),
            "RTF": sig(r.median / seconds),
            "memory: framework peak / RSS Δ": f"{fmt_bytes(r.mem)} / {fmt_bytes(r.rss)}",
            "parity against PyTorch": backend_parity(sec, "pipeline", r.variant, seconds, r.backend, r.device),
            "run": f"`{r.run_id}`",
        }
        for sec, r in measured
    ]
    if not recs:
        recs = [
            {
                "backend": "–",
                f"pipeline time ({fmt_len(seconds)})": f"not measured (`{RUN} --stages pipeline`, full-size models)",
            }
        ]
    return (
        f"## Backend summary\n\nEvery backend and device measured: the full pipeline on {fmt_len(seconds)} of "
        f"audio {notes.BACKENDS}\n\n"
        + table(recs)
        + f"\n{notes.ORIGINAL}\n\n"
        + table(original_backends(measured, pubs))
    )


def render(st: run_store.Store, pubs: pd.DataFrame) -> Document:
    """The document from a store's contents (`store.read`) and the published figures (`files.published`)."""
    secs = sections_of(st)
    machines = len({s.machine_id for s in secs})
    parts = [
        "# rvc-bench: MLX and ONNX Runtime against PyTorch, stage by stage\n",
        notes.HEADER,
        f"{len(st.runs)} run(s) on {machines} machine(s). {notes.PUBLISHED}",
    ]
    if st.problems:
        parts.append("Unreadable store files (skipped): " + "; ".join(f"`{p}`" for p in st.problems) + "\n")
    parts += [summary(secs, pubs), runs_section(st)]
    parts += [machine_section(sec, pubs) for sec in secs]
    parts += [across_machines(secs), backend_summary(secs, pubs)]
    figures = {name: spec for sec in secs for name, spec in figures_of(sec).items()}
    return Document("\n".join(p for p in parts if p), figures)
