"""Formatting: three significant figures with a unit, fixed rules, so the same numbers always give the same text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rvc_bench.measure import KEEP_FREED

TITLES = {
    "mel": "Log-mel (RMVPE front end)",
    "rmvpe": "RMVPE pitch",
    "hubert": "HuBERT/ContentVec features",
    "synth": "RVC synthesis",
    "pipeline": "Full pipeline",
}
BACKEND_TITLES = {"torch": "PyTorch", "mlx": "MLX", "onnx": "ONNX Runtime", "numpy": "numpy"}
RUN = "rvc-bench run"
ALLOCATORS = {KEEP_FREED: "glibc malloc, freed memory kept"}


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


def fmt_ratio(r: float, lo: float, hi: float, calls: tuple[int, int] = (2, 2)) -> str:
    """A ratio and its interval; calls: the calls timed on each side, of which one a side gives no interval (the
    bootstrap of one call is that call) and one on a side an interval of the other side's spread only."""
    if not np.isfinite(r):
        return "–"
    if max(calls) == 1:
        return f"{sig(r)}× (one call each)"
    if min(calls) == 1:
        return f"{sig(r)}× (one call on one side)"
    return f"{sig(r)}× ({sig(lo)}–{sig(hi)})"


def fmt_len(s: float) -> str:
    return f"{s:g} s" if s < 60 or s % 60 else f"{s / 60:g} min"


def fmt_lengths(lengths) -> str:
    """Lengths as `--lengths` takes them."""
    return ",".join(f"{s:g}" for s in lengths)


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


def speed_header(backend: str, device: str) -> str:
    return f"speedup {col(backend, device)}"


def runs_text(run_ids) -> str:
    return ", ".join(f"`{r}`" for r in run_ids)


def describe_machine(m: dict) -> str:
    if not m:
        return "unknown machine"
    parts = [
        str(m.get("cpu", "?")),
        f"{m.get('cpu_count', '?')} cores",
        fmt_bytes(m.get("ram_bytes", math.nan)),
        f"{m.get('system', '?')} {m.get('machine', '')}".strip(),
    ]
    if m.get("hw_model"):
        parts.insert(0, m["hw_model"])
    parts += list(m.get("gpus") or [])
    return ", ".join(parts)


def backend_parts(desc: dict) -> dict[str, str]:
    """A backend's description in parts ("" where unknown): backend, version, BLAS (with its sgemm rate) and
    allocator (shortened: the Runs note gives the thresholds)."""
    gflops = desc.get("mlx_cpu_sgemm_gflops") or desc.get("torch_cpu_sgemm_gflops")
    blas = [str(desc[k]) for k in ("torch_blas", "mlx_cpu_blas") if desc.get(k)]
    blas += [f"sgemm {sig(float(gflops))} GFLOP/s"] if gflops else []
    allocator = str(desc.get("allocator") or "")
    return {
        "backend": str(desc.get("label", desc.get("backend", "?"))),
        "version": str(desc.get(f"{desc.get('backend')}_version") or desc.get("version") or ""),
        "BLAS": ", ".join(blas),
        "allocator": ALLOCATORS.get(allocator, allocator),
    }


def backend_text(desc: dict) -> str:
    """One line: backend version (BLAS, sgemm, the allocator in full)."""
    p = backend_parts(desc)
    extra = ", ".join(x for x in (p["BLAS"], str(desc.get("allocator") or "")) if x)
    return f"{p['backend']} {p['version']}".strip() + (f" ({extra})" if extra else "")
