"""The document's I/O: reading what `render` is given (the run store, the published figures in references/),
writing the document and its figures atomically, and `--check` (is a committed document what the store
generates?)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from rvc_bench import store as run_store
from rvc_bench.fileio import atomic_write_bytes
from rvc_bench.report.document import Document, render
from rvc_bench.resources import reference


class ReportError(RuntimeError):
    pass


def published() -> pd.DataFrame:
    """The original document's figures (references/original_benchmarks.csv)."""
    text = reference("original_benchmarks.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    df = pd.DataFrame(rows)
    df["value"] = df.value.astype(float)
    df["audio_seconds"] = pd.to_numeric(df.audio_seconds, errors="coerce")
    return df


def read_store(store_dir: str | Path) -> run_store.Store:
    """The store a document is made from; one without a readable run has nothing to report."""
    st = run_store.read(store_dir)
    if st.rows.empty:
        raise ReportError(f"no readable runs in {store_dir}" + (f" ({'; '.join(st.problems)})" if st.problems else ""))
    return st


def generate(store_dir: str | Path) -> Document:
    """The document the store at `store_dir` generates."""
    return render(read_store(store_dir), published())


def outputs(out: str | Path) -> tuple[Path, Path]:
    """What `write(store, out)` writes: the document, and the folder its figures go into (names from the store)."""
    return Path(out), Path(out).parent / "figures"


def write(store_dir: str | Path, out: str | Path) -> Path:
    """Render, then write the document and its figures (atomically each); nothing is written if rendering fails."""
    from rvc_bench import plots

    out = Path(out)
    doc = generate(store_dir)
    pngs = {name: plots.png(spec) for name, spec in doc.figures.items()}
    for name, data in pngs.items():
        atomic_write_bytes(outputs(out)[1] / name, data)
    atomic_write_bytes(out, doc.text.encode())
    return out


def check(store_dir: str | Path, committed: str | Path) -> str | None:
    """None when `committed` is exactly what the store generates, else a one-line reason."""
    committed = Path(committed)
    if not committed.is_file():
        return f"{committed} does not exist"
    want, have = generate(store_dir).text, committed.read_text(encoding="utf-8")
    if want == have:
        return None
    a, b = have.splitlines(), want.splitlines()
    line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"{committed} differs from what the store generates (first difference at line {line + 1})"
