"""reports/BENCHMARKS.md from the run store alone. `render` is a pure function of the store's contents and the
published figures it is given (no model code, no clock, no file read); `files` reads those, writes the document
and its figures, and checks a committed document against the store.

The document: a summary first (per machine: speedups with intervals, parity verdicts, published claims), the runs
with their status, then one section per machine and model size holding every table of the original document, then
what compares across machines (absolute numbers side by side, never divided). Ratios follow rvc_bench.results'
pairing rule. A table without data says which command fills it.

Modules: formatting (numbers to text), query (a section's data and the one selector), tables and sections (the
tables), summary, notes (the fixed prose), document (`render`), files (I/O).
"""

from rvc_bench.report.document import Document, render
from rvc_bench.report.files import ReportError, check, generate, outputs, published, read_store, write
from rvc_bench.report.formatting import exact, fmt_bytes, fmt_len, fmt_line, fmt_ratio, fmt_time, sig
from rvc_bench.report.sections import FigureSpec

__all__ = ["Document", "FigureSpec", "ReportError", "check", "exact", "fmt_bytes", "fmt_len", "fmt_line",
           "fmt_ratio", "fmt_time", "generate", "outputs", "published", "read_store", "render", "sig", "write"]
