"""Backend adapters: the only code that knows torch and MLX runtime details.

Each adapter chooses its device (torch: mps -> cuda -> cpu; MLX: gpu -> cpu), moves numpy arrays in and out at a
stage boundary, forces a call's own outputs (`sync`), reads memory counters and describes the device that really
ran. Asking for an unavailable device by name is an error, never a silent fallback.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from rvc_bench import blas

BACKENDS = ("torch", "mlx")
TORCH_DEVICES = ("mps", "cuda", "cpu")
MLX_DEVICES = ("gpu", "cpu")


class BackendError(RuntimeError):
    """A backend or device that cannot run here; the message says why."""


def _tree_leaves(x: Any) -> list:
    if isinstance(x, (list, tuple)):
        return [leaf for item in x for leaf in _tree_leaves(item)]
    if isinstance(x, dict):
        return [leaf for item in x.values() for leaf in _tree_leaves(item)]
    return [x]


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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.before = self._proc.memory_info().rss
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.source = "linux VmHWM"
        except OSError:
            self.source = "sampled rss (1 ms)"
            self.peak = self.before
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._proc.memory_info().rss)
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
# Adapters


@dataclass
class Backend:
    """Common surface of both adapters."""

    name: str
    device: str
    memory_source: str = field(default="", init=False)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.device}"

    def run(self, fn: Callable, *args) -> Any:
        """Call fn and force its outputs before returning: what a timed region must contain."""
        out = fn(*args)
        self.sync(out)
        return out

    # subclasses: from_numpy, to_numpy, sync, reset_peak_memory, peak_memory, describe


class TorchBackend(Backend):
    def __init__(self, device: str | None = None):
        import torch

        self.torch = torch
        available = torch_devices()
        if device in (None, "auto"):
            device = next(d for d in TORCH_DEVICES if d in available)
        elif device not in TORCH_DEVICES:
            raise BackendError(f"unknown torch device {device!r}: choose one of {', '.join(TORCH_DEVICES)}")
        elif device not in available:
            raise BackendError(f"torch device {device!r} is not available here: {available_reason('torch', device)}")
        super().__init__("torch", device)
        self.dev = torch.device(device)
        self.memory_source = {"cuda": "torch.cuda.max_memory_allocated",
                              "mps": "torch.mps.current_allocated_memory (sampled every 2 ms)"}.get(device, "")
        self._samplers: dict[str, _Sampler] = {}
        self._extra: dict[str, float] = {}

    def from_numpy(self, x: np.ndarray, dtype=None):
        t = self.torch.from_numpy(np.ascontiguousarray(x))
        if dtype is not None:
            t = t.to(dtype)
        return t.to(self.dev)

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()

    def sync(self, outputs: Any = None) -> None:
        # torch has no per-tensor wait: synchronising the device finishes every kernel the outputs depend on.
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        elif self.device == "mps":
            self.torch.mps.synchronize()

    def reset_peak_memory(self) -> None:
        self._extra = {}
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
        elif self.device == "mps":
            # MPS has no peak API: sample live tensors and the driver's total (allocator pools, MPSGraph) instead.
            mps = self.torch.mps
            self._samplers = {"current": _Sampler(mps.current_allocated_memory),
                              "driver": _Sampler(mps.driver_allocated_memory)}
            for sampler in self._samplers.values():
                sampler.start()

    def peak_memory(self) -> float:
        """Framework-reported peak bytes since reset_peak_memory; NaN where the framework has no counter (CPU)."""
        if self.device == "cuda":
            self._extra = {"mem_cuda_reserved_peak": float(self.torch.cuda.max_memory_reserved())}
            return float(self.torch.cuda.max_memory_allocated())
        if self.device == "mps" and self._samplers:
            peaks = {name: float(sampler.stop()) for name, sampler in self._samplers.items()}
            self._samplers = {}
            self._extra = {"mem_mps_driver_peak_sampled": peaks["driver"]}
            return peaks["current"]
        return float("nan")

    def extra_memory(self) -> dict[str, float]:
        """Further counters read by the last peak_memory() call (CUDA reserved, MPS driver), by row name."""
        return dict(self._extra)

    def describe(self) -> dict:
        torch = self.torch
        info = {"backend": "torch", "device": self.device, "torch_version": torch.__version__,
                "torch_threads": torch.get_num_threads()}
        if self.device == "cuda":
            info["device_name"] = torch.cuda.get_device_name()
            info["cuda_version"] = torch.version.cuda
        elif self.device == "mps":
            info["device_name"] = f"{cpu_model()} GPU (Metal Performance Shaders)"
            info["mps_fallback"] = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK", "0")
        else:
            info["device_name"] = cpu_model()
            info.update(blas.torch_cpu_blas())
        return info


class MLXBackend(Backend):
    def __init__(self, device: str | None = None):
        import mlx.core as mx

        self.mx = mx
        available = mlx_devices()
        if device in (None, "auto"):
            device = next(d for d in MLX_DEVICES if d in available)
        elif device not in MLX_DEVICES:
            raise BackendError(f"unknown MLX device {device!r}: choose one of {', '.join(MLX_DEVICES)}")
        elif device not in available:
            raise BackendError(f"MLX device {device!r} is not available here: {available_reason('mlx', device)}")
        super().__init__("mlx", device)
        mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
        if device == "cpu":
            # On unified-memory Macs MLX caps itself near the GPU working set; on a CPU box its default (~80 % of
            # RAM) leaves no room for the torch reference computed in the same process at 300 s. Half of RAM does.
            mx.set_memory_limit(_ram_bytes() // 2)
            # MLX's CPU allocator keeps only 32 MB of freed buffers, so every call re-faults its activations from
            # the OS (~230k page faults per 5 s RMVPE call). A quarter of the memory limit removes that churn
            # without letting cached im2col buffers of long inputs crowd out RAM (Metal caches up to the limit).
            mx.set_cache_limit(mx.get_memory_limit() // 4)
        self.memory_source = "mlx.get_peak_memory"

    def from_numpy(self, x: np.ndarray, dtype=None):
        a = self.mx.array(np.ascontiguousarray(x))
        return a.astype(dtype) if dtype is not None else a

    def to_numpy(self, x) -> np.ndarray:
        return np.array(x.astype(self.mx.float32) if self.mx.issubdtype(x.dtype, self.mx.floating) else x)

    def sync(self, outputs: Any = None) -> None:
        # MLX is lazy: evaluate exactly the outputs we were given (evaluating a fresh array would force nothing).
        arrays = [leaf for leaf in _tree_leaves(outputs) if isinstance(leaf, self.mx.array)]
        if arrays:
            self.mx.eval(*arrays)
        self.mx.synchronize()

    def reset_peak_memory(self) -> None:
        self.mx.reset_peak_memory()

    def peak_memory(self) -> float:
        return float(self.mx.get_peak_memory())

    def extra_memory(self) -> dict[str, float]:
        return {}

    def describe(self) -> dict:
        mx = self.mx
        info = {"backend": "mlx", "device": self.device, "mlx_version": mx.__version__}
        if self.device == "gpu":
            dev = mx.device_info()
            info["device_name"] = str(dev.get("device_name", "")) or ("CUDA GPU" if _mlx_has_cuda() else "Metal GPU")
            info["gpu_api"] = "CUDA" if _mlx_has_cuda() else "Metal"
        else:
            info["device_name"] = cpu_model()
            info.update(blas.mlx_cpu_blas())
            info["mlx_memory_limit"] = mx.get_memory_limit()
            info["mlx_cache_limit"] = mx.get_memory_limit() // 4  # as set in __init__
        return info


class _Sampler:
    """Samples a byte counter in a thread; returns the maximum seen (MPS has no peak API)."""

    def __init__(self, read: Callable[[], int], period_s: float = 0.002):
        self.read, self.period, self.peak = read, period_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.peak = self.read()
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.period)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.read())


def get_backend(name: str, device: str | None = None) -> Backend:
    if name == "torch":
        return TorchBackend(device)
    if name == "mlx":
        return MLXBackend(device)
    raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


# ---------------------------------------------------------------------------------------------------------------
# What this machine has


@lru_cache(maxsize=None)
def torch_devices() -> tuple[str, ...]:
    try:
        import torch
    except ImportError:
        return ()
    found = []
    if torch.backends.mps.is_available():
        found.append("mps")
    if torch.cuda.is_available():
        found.append("cuda")
    found.append("cpu")
    return tuple(found)


def _mlx_has_cuda() -> bool:
    import mlx.core as mx

    return hasattr(mx, "cuda") and mx.cuda.is_available()


@lru_cache(maxsize=None)
def mlx_devices() -> tuple[str, ...]:
    try:
        import mlx.core as mx
    except ImportError:
        return ()
    return ("gpu", "cpu") if mx.is_available(mx.gpu) else ("cpu",)


def available_reason(backend: str, device: str) -> str:
    """Why a device is missing, in one line."""
    system, machine = platform.system(), platform.machine()
    if backend == "torch":
        try:
            import torch
        except ImportError:
            return "torch is not installed"
        if device == "mps":
            if system != "Darwin":
                return f"MPS needs macOS on Apple Silicon (this is {system} {machine})"
            return "torch.backends.mps.is_available() is False (macOS < 12.3 or a torch build without MPS)"
        if device == "cuda":
            return "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
    if backend == "mlx":
        try:
            import mlx.core  # noqa: F401
        except ImportError:
            return "mlx is not installed (pip install 'mlx[cpu]' on Linux, 'mlx' on macOS arm64)"
        if device == "gpu":
            if system == "Darwin":
                return "MLX sees no Metal GPU (Intel Mac or a virtual machine without Metal)"
            return "this MLX build has no GPU backend (mlx[cpu]); install mlx[cuda12] on an NVIDIA machine"
    return "available"


@lru_cache(maxsize=None)
def cpu_model() -> str:
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.processor()
        except OSError:
            return platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int:
    import psutil

    return psutil.virtual_memory().total


def machine_info() -> dict:
    """Run-level metadata: host, OS, CPU, memory, Python and library versions."""
    import psutil

    info = {
        "hostname": platform.node(), "system": platform.system(), "release": platform.release(),
        "machine": platform.machine(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total, "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if sys.platform == "darwin":
        info["macos"] = platform.mac_ver()[0]
        try:
            info["hw_model"] = subprocess.run(["sysctl", "-n", "hw.model"], capture_output=True, text=True,
                                              timeout=5).stdout.strip()
        except OSError:
            pass
    for mod in ("torch", "mlx.core"):
        try:
            info[mod.split(".")[0]] = __import__(mod, fromlist=["_"]).__version__
        except ImportError:
            info[mod.split(".")[0]] = None
    info["torch_devices"] = ",".join(torch_devices())
    info["mlx_devices"] = ",".join(mlx_devices())
    return info
