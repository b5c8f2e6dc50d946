"""reports/BENCHMARKS.md from the run store alone.

formatting.py  numbers to text: three significant figures with a unit, fixed rules
query.py       Section (one machine and model size's data) and `select`, the one selector of its rows
tables.py      the original document's tables for one section (tables of one shape share their loop)
sections.py    one section: hardware, the tables, numerical accuracy, its figures (FigureSpec)
summary.py     the summary (speedups, parity verdicts, published claims) and the runs table
notes.py       the document's fixed prose
document.py    render(store contents, published figures) -> Document: a pure function (no file read, no clock)
files.py       the I/O: reads what `render` is given, writes the document and its figures atomically, `check`

The document: a summary first (per machine: speedups with intervals, parity verdicts, published claims), the runs
with their status, then one section per machine and model size holding every table of the original document, then
what compares across machines (absolute numbers side by side, never divided). Ratios follow rvc_bench.results'
pairing rule. A table without data says which command fills it.

This file imports none of them: the modules import each other, and a package whose __init__ imports them would
close an import cycle (tests/test_architecture.py). Callers import the module they use.
"""
