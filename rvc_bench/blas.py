"""Which BLAS each framework calls on a CPU, and a fast one for MLX's Linux CPU backend from pip alone.

The Linux `mlx[cpu]` wheel links a reference (netlib) BLAS through its RPATH (`mlx_cpu.libs/libblas-*.so*`): fp32
matmuls and convolutions run one to two orders of magnitude slower than with an optimised BLAS. A library that
exports `cblas_sgemm` and is preloaded (LD_PRELOAD) comes first in the dynamic linker's global scope, so MLX calls it
instead. The `mkl` wheel (a Linux x86_64 dependency of rvc-bench) provides one without any system package: its
`libmkl_rt` exports `cblas_sgemm`/`sgemm_` and loads its threading layer from the same wheel set (`intel-openmp`).

The preload must reach MLX's process only: libtorch exports `sgemm_` too, so a preloaded BLAS would replace torch's
own in its process (it made the torch baseline up to 1.8x slower with OpenBLAS). `rvc-bench run` therefore runs
each backend in its own process and gives only MLX's the environment from `process_env`; `rvc-bench infer --backend
mlx` restarts itself once with it. What a process really resolved is read from its mapped libraries, not assumed.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CHOICES = ("auto", "mkl", "openblas", "bundled")
MARKER = "RVC_BENCH_MLX_BLAS"  # set in a process started with our preload: says which, and stops a second restart
# MKL's threading layer: INTEL uses libiomp5 from the intel-openmp wheel that mkl depends on. (GNU would need the
# system's libgomp.so.1, which a fresh machine may lack: MKL then aborts the process.)
MKL_ENV = {"MKL_THREADING_LAYER": "INTEL"}
SYSTEM_OPENBLAS = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
PROBE_N = 512  # sgemm probe size: milliseconds with a real BLAS, ~0.1 s with the reference one


class BlasError(RuntimeError):
    """A requested BLAS that this machine does not have; the message says how to get it."""


@dataclass(frozen=True)
class Preload:
    """A BLAS to preload into MLX's process: its name, the library and the variables it needs."""

    name: str  # "mkl" or "openblas"
    path: str
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{name_library(self.path)} ({self.path}{''.join(f', {k}={v}' for k, v in self.env.items())})"


# ---------------------------------------------------------------------------------------------------------------
# Finding the libraries


def mkl_library() -> str | None:
    """libmkl_rt from the installed `mkl` wheel, found through the wheel's own file list (it installs into
    <prefix>/lib, outside site-packages)."""
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if re.fullmatch(r"libmkl_rt\.so\.\d+", f.name):
            path = Path(f.locate()).resolve()
            if path.is_file():
                return str(path)
    return None


def mkl_version() -> str | None:
    try:
        return importlib.metadata.version("mkl")
    except importlib.metadata.PackageNotFoundError:
        return None


def system_openblas() -> str | None:
    """A system OpenBLAS (e.g. Debian's libopenblas0-pthread), if one is installed."""
    return next((p for p in SYSTEM_OPENBLAS if os.path.exists(p)), None)


def select(choice: str) -> Preload | None:
    """What `--mlx-blas CHOICE` preloads on this machine; None keeps MLX's bundled BLAS."""
    if choice not in CHOICES:
        raise BlasError(f"unknown --mlx-blas {choice!r}: choose one of {', '.join(CHOICES)}")
    if sys.platform != "linux" or choice == "bundled":
        return None  # macOS: MLX uses Accelerate
    mkl, openblas = mkl_library(), system_openblas()
    if choice == "mkl" and mkl is None:
        raise BlasError("--mlx-blas mkl: the mkl wheel is not installed (pip install mkl; Linux x86_64 only)")
    if choice == "openblas" and openblas is None:
        raise BlasError(
            "--mlx-blas openblas: no system OpenBLAS found (Debian/Ubuntu: apt-get install libopenblas0-pthread)"
        )
    if choice in ("auto", "mkl") and mkl is not None:
        return Preload("mkl", mkl, dict(MKL_ENV))
    if choice in ("auto", "openblas") and openblas is not None:
        return Preload("openblas", openblas)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Environments


def _without(preload: str, paths: set[str]) -> str:
    return " ".join(p for p in re.split(r"[ :]", preload) if p and p not in paths)


def process_env(backend: str, choice: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for one backend's process: MLX gets the chosen BLAS preloaded; torch gets none of ours, even if
    this process inherited it (it would replace the sgemm that libtorch exports)."""
    env = dict(os.environ if base is None else base)
    ours = {p for p in (mkl_library(), system_openblas()) if p}
    env["LD_PRELOAD"] = _without(env.get("LD_PRELOAD", ""), ours)
    env.pop(MARKER, None)
    if backend == "mlx":
        preload = select(choice)
        if preload is not None:
            env["LD_PRELOAD"] = " ".join(p for p in (preload.path, env["LD_PRELOAD"]) if p)
            env.update(preload.env)
            env[MARKER] = preload.name
    if not env["LD_PRELOAD"]:
        del env["LD_PRELOAD"]
    return env


def preloaded() -> str | None:
    """The BLAS this process was started with by rvc-bench (from the marker), or None."""
    return os.environ.get(MARKER)


# ---------------------------------------------------------------------------------------------------------------
# What a process really resolved


def _mapped_file(address: int) -> str | None:
    """The file mapped at `address` in this process (/proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= address < hi:
                    return parts[5].strip() if len(parts) == 6 else None
    except OSError:
        return None
    return None


def global_symbol_file(symbol: str) -> str | None:
    """Which mapped library provides `symbol` in the global scope (executable, preloads, RTLD_GLOBAL libraries).

    A library loaded by a Python extension (libmlx, libtorch) searches that scope before its own dependencies, so a
    symbol found here is the one MLX calls instead of its bundled BLAS (and the one torch calls for `sgemm_`).
    """
    try:
        address = ctypes.cast(getattr(ctypes.CDLL(None), symbol), ctypes.c_void_p).value
    except AttributeError:
        return None
    return _mapped_file(address) if address else None


def mapped_libraries() -> list[str]:
    try:
        with open("/proc/self/maps") as f:
            return sorted({line.split(maxsplit=5)[5].strip() for line in f if line.count(" ") >= 5 and "/" in line})
    except OSError:
        return []


def name_library(path: str) -> str:
    """A readable name for a BLAS library file."""
    base = os.path.basename(path)
    if base.startswith("libmkl_rt"):
        version = mkl_version() if path == mkl_library() else None
        return "MKL" + (f" {version}" if version else "")
    if base.startswith("libopenblas"):
        return "OpenBLAS"
    if "mlx_cpu.libs" in path and base.startswith("libblas"):
        return "reference BLAS bundled with mlx[cpu]"
    return base


def _mkl_threading(libs: list[str]) -> str:
    layers = {
        "libmkl_intel_thread": "INTEL",
        "libmkl_gnu_thread": "GNU",
        "libmkl_tbb_thread": "TBB",
        "libmkl_sequential": "SEQUENTIAL",
    }
    found = [v for k, v in layers.items() if any(os.path.basename(p).startswith(k) for p in libs)]
    return ", ".join(found) or "not loaded yet"


def mlx_blas_in_process() -> tuple[str, str]:
    """(name, library file) of the BLAS that MLX's CPU backend calls in this process. Imports mlx."""
    import mlx.core  # noqa: F401  (maps libmlx and its bundled BLAS)

    if sys.platform == "darwin":
        return "Accelerate", ""
    path = global_symbol_file("cblas_sgemm")
    if path:
        name = name_library(path)
        if name.startswith("MKL"):
            name += f", {_mkl_threading(mapped_libraries())} threading"
        return name + ", preloaded", path
    bundled = next(
        (p for p in mapped_libraries() if "mlx_cpu.libs" in p and os.path.basename(p).startswith("libblas")), None
    )
    if bundled is None:
        return "unknown", ""
    inner = global_symbol_file("sgemm_")  # the bundled CBLAS wrapper calls sgemm_, which a preload may replace
    if inner:
        return f"{name_library(inner)} sgemm_ under the bundled CBLAS wrapper, preloaded", inner
    return name_library(bundled), bundled


def torch_blas_in_process() -> str:
    """torch's CPU BLAS as built, and whether something in this process replaces the `sgemm_` libtorch exports."""
    import torch

    m = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    name = (m.group(1) if m else "unknown") + " (torch's own build)"
    interposed = global_symbol_file("sgemm_") if sys.platform == "linux" else None
    if interposed and not os.path.basename(interposed).startswith("libtorch"):
        name += f", but sgemm_ is interposed by a preloaded {name_library(interposed)} ({interposed})"
    return name


# ---------------------------------------------------------------------------------------------------------------
# Speed probes


def _gflops(matmul, n: int, rounds: int = 3) -> float:
    matmul()  # warm-up: first call loads MKL's kernels and threading layer
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        matmul()
        times.append(time.perf_counter() - t0)
    return round(2 * n**3 / sorted(times)[len(times) // 2] / 1e9, 1)


def mlx_sgemm_gflops(n: int = PROBE_N) -> float:
    """Median fp32 n x n matmul speed of MLX on the CPU, GFLOP/s."""
    import mlx.core as mx

    a = mx.random.normal((n, n), key=mx.random.key(0))
    b = mx.random.normal((n, n), key=mx.random.key(1))
    mx.eval(a, b)
    return _gflops(lambda: mx.eval(mx.matmul(a, b, stream=mx.cpu)), n)


def torch_sgemm_gflops(n: int = PROBE_N) -> float:
    """Median fp32 n x n matmul speed of torch on the CPU, GFLOP/s."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    return _gflops(lambda: torch.mm(a, b), n)


@lru_cache(maxsize=None)
def mlx_cpu_blas() -> dict:
    """Which BLAS MLX's CPU backend calls in this process, and how fast an fp32 matmul runs with it."""
    gflops = mlx_sgemm_gflops()  # first: MKL maps its threading layer on the first call
    name, path = mlx_blas_in_process()
    return {"mlx_cpu_blas": name, "mlx_cpu_blas_path": path, "mlx_cpu_sgemm_gflops": gflops}


@lru_cache(maxsize=None)
def torch_cpu_blas() -> dict:
    return {"torch_blas": torch_blas_in_process(), "torch_cpu_sgemm_gflops": torch_sgemm_gflops()}


def collection_lines(descriptions: dict[str, dict]) -> list[str]:
    """The BLAS each CPU backend's adapter resolved (backend label -> describe()), for pytest's header: `pytest
    suites/` run directly does not get the BLAS that `rvc-bench run` preloads for MLX, so say so where it shows."""
    lines = []
    for label, d in descriptions.items():
        if d.get("mlx_cpu_blas"):
            lines.append(
                f"rvc-bench: {label} BLAS: {d['mlx_cpu_blas']} ({d['mlx_cpu_sgemm_gflops']} GFLOP/s sgemm {PROBE_N})"
            )
            if not preloaded() and select("auto") is not None:
                lines.append(
                    "rvc-bench: `rvc-bench run` preloads a faster BLAS for MLX; `rvc-bench doctor` prints "
                    "the command that gives it to pytest"
                )
        elif d.get("torch_blas"):
            lines.append(
                f"rvc-bench: {label} BLAS: {d['torch_blas']} ({d['torch_cpu_sgemm_gflops']} GFLOP/s sgemm {PROBE_N})"
            )
    return lines


def restart_for_mlx(choice: str) -> None:
    """Restart this command once in MLX's BLAS environment: LD_PRELOAD takes effect only at process start (the
    marker the environment sets stops a second restart). Never for torch alone. Raises BlasError."""
    if MARKER in os.environ:
        return
    env = process_env("mlx", choice)
    if MARKER in env:
        os.execve(sys.executable, [sys.executable, "-m", "rvc_bench.cli", *sys.argv[1:]], env)
