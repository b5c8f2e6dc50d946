"""Cold and warm timing around a backend call, memory beside it, and the fresh-process probe.

Every timed region is `backend.run(fn, *args)`, which calls fn and forces that call's own outputs (mx.eval of the
outputs, torch device synchronisation). Warm timing goes through pytest-benchmark's pedantic mode with explicit
warm-up rounds and every round kept; the cold time (first call after loading, compilation included) is taken
separately, before the warm-up.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rvc_bench.backends import Backend
from rvc_bench.sampling import PeakSampler

DEFAULT_ROUNDS = 7  # timed rounds per benchmark (README: "Rounds, intervals and the gate")
DEFAULT_WARMUP = 1  # untimed rounds between the cold call and the timed ones


def per_length(text, n_lengths: int, low: int, what: str) -> list[int]:
    """--rounds / --warmup: one count for every length ("7") or one per length of --lengths ("7,3,2"), so that a
    long grid can time its longest lengths fewer times. Raises ValueError with a one-line message."""
    try:
        counts = [int(x) for x in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{what} must be whole numbers separated by commas, got {text!r}") from None
    if any(c < low for c in counts):
        raise ValueError(f"{what} must be at least {low}, got {text!r}")
    if len(counts) == 1:
        return counts * n_lengths
    if len(counts) != n_lengths:
        raise ValueError(f"{what} gives {len(counts)} counts for {n_lengths} lengths: give one, or one per length")
    return counts


def rounds_and_warmup(rounds, warmup, n_lengths: int) -> tuple[list[int], list[int]]:
    """Both per-length counts. 0 timed rounds at a length means its first call is the only one (the cold time, for
    lengths too long to time again), so that length takes no warm-up either. Raises ValueError (one line)."""
    r = per_length(rounds, n_lengths, 0, "--rounds")
    w = per_length(warmup, n_lengths, 0, "--warmup")
    if any(ri == 0 and wi > 0 for ri, wi in zip(r, w)):
        raise ValueError(
            f"a length with 0 timed rounds (first call only) takes 0 warm-up rounds: --rounds {rounds} "
            f"--warmup {warmup}"
        )
    return r, w


def compact(counts: list[int]) -> int | list[int]:
    """Per-length counts as stored in a run's options: one number when every length has the same."""
    return counts[0] if len(set(counts)) == 1 else counts


# ---------------------------------------------------------------------------------------------------------------
# Process memory: Linux has an exact, resettable high-water mark; elsewhere a sampling thread stands in.


def _read_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssPeak:
    """Peak resident set size of this process during a `with` block, in bytes.

    Linux: reset VmHWM through /proc/self/clear_refs ("5") and read it back (exact). Otherwise: sample psutil's
    RSS every millisecond (may miss spikes shorter than that). `source` names which one was used.
    """

    def __init__(self):
        self.peak = 0
        self.before = 0
        self.source = ""
        self._sampler: PeakSampler | None = None

    def __enter__(self):
        import psutil

        proc = psutil.Process()
        self.before = proc.memory_info().rss
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.source = "linux VmHWM"
        except OSError:
            self.source = "sampled rss (1 ms)"
            self._sampler = PeakSampler(lambda: proc.memory_info().rss, 0.001)
            self._sampler.start()
        return self

    def __exit__(self, *exc):
        if self._sampler is not None:
            self.peak = self._sampler.stop()
        else:
            self.peak = (_read_status_kib("VmHWM") or 0) * 1024
        return False

    @property
    def delta(self) -> int:
        return max(0, self.peak - self.before)


def max_rss_bytes() -> int:
    """Lifetime peak RSS of this process; ru_maxrss is bytes on macOS and KiB on Linux."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


# ---------------------------------------------------------------------------------------------------------------
# The C heap. glibc's malloc hands blocks above 128 KiB back to the kernel when they are freed (mmap/munmap, heap
# trimming), so each call of a stage page-faults its whole working set in again: on a Linux CPU that made torch's
# 5 s pipeline take twice as long (7.4 M minor faults, 20 s of system time in 3 calls). Keeping freed memory in the
# process, which is what PyTorch's CPU tuning guide gets from jemalloc or tcmalloc, gives every backend that
# reuses it; the cold call starts from a trimmed heap, so its RSS high-water mark still counts what it needs.

KEEP_FREED = "glibc malloc keeping freed memory (mmap threshold 1 GiB, trim threshold 2 GiB)"


@functools.lru_cache(maxsize=None)
def _glibc():  # once per process: find_library runs ldconfig, and every cold call trims the heap
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def keep_freed_memory() -> str:
    """Tune glibc's malloc (Linux) to keep freed blocks for reuse; returns what the process's allocator now is."""
    libc = _glibc()
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters (malloc.h)
    if (
        libc is not None
        and libc.mallopt(m_mmap_threshold, 2**30) == 1
        and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    ):
        return KEEP_FREED
    return "the platform's malloc (untuned)"


def release_freed_memory() -> None:
    """Give the heap's free memory back to the kernel (before a cold call: its RSS peak then shows its own need)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@dataclass
class Measurement:
    cold_s: float
    mem_framework_peak: float = float("nan")  # bytes
    rss_peak_delta: float = float("nan")  # bytes
    mem_extra: dict = field(default_factory=dict)  # further counters by name (bytes), e.g. MPS driver memory
    output: Any = None


def cold_call(backend: Backend, fn: Callable, args: tuple) -> Measurement:
    """One synchronised call, with the framework peak counter reset and the process high-water mark tracked."""
    backend.sync(args)  # inputs are ready before the clock starts
    gc.collect()
    release_freed_memory()
    backend.reset_peak_memory()
    with RssPeak() as rss:
        t0 = time.perf_counter()
        out = backend.run(fn, *args)
        cold = time.perf_counter() - t0
    peak = backend.peak_memory()
    return Measurement(
        cold_s=cold, mem_framework_peak=peak, rss_peak_delta=rss.delta, mem_extra=backend.extra_memory(), output=out
    )


def warm_rounds(benchmark, backend: Backend, fn: Callable, args: tuple, rounds: int, warmup: int) -> list[float]:
    """Warm timings through pytest-benchmark (pedantic: no calibration, explicit warm-up, one call per round)."""
    benchmark.pedantic(backend.run, args=(fn, *args), rounds=rounds, warmup_rounds=warmup, iterations=1)
    stats = getattr(benchmark, "stats", None)
    return list(stats.stats.data) if stats is not None else []  # None under --benchmark-disable


def time_call(backend: Backend, fn: Callable, args: tuple, repeat: int) -> list[float]:
    """Plain warm timing outside pytest (used by tests of the measuring core itself)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        backend.run(fn, *args)
        times.append(time.perf_counter() - t0)
    return times


# ---------------------------------------------------------------------------------------------------------------
# Fresh-process probe: rerun one benchmark test alone in a new interpreter, which imports, loads and calls once;
# its lifetime peak RSS is then the honest process memory of that (stage, backend, length).

PROBE_ENV = "RVC_BENCH_PROBE_OUT"


def run_probe(nodeid: str, extra_args: list[str], timeout_s: float = 1800) -> dict:
    """Run `nodeid` in a fresh pytest process in probe mode; return {"cold_s", "rss_peak", "frameworks"}."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        env = dict(os.environ, **{PROBE_ENV: str(out)})
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            nodeid,
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-disable",
            *extra_args,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise RuntimeError(f"probe of {nodeid} failed: {' | '.join(tail)}")
        return json.loads(out.read_text())


def write_probe_result(cold_s: float) -> None:
    # Which frameworks the process holds when its peak RSS is read: a probe must hold only the one it measures.
    frameworks = [name for name in ("torch", "mlx", "onnxruntime") if name in sys.modules]
    Path(os.environ[PROBE_ENV]).write_text(
        json.dumps({"cold_s": cold_s, "rss_peak": max_rss_bytes(), "frameworks": frameworks})
    )
