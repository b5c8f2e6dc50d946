"""Backend adapters: the only code that knows torch, MLX and ONNX Runtime runtime details.

Each adapter chooses its device (torch: mps -> cuda -> cpu; MLX: gpu -> cpu; ONNX Runtime: its execution providers
coreml -> cuda -> cpu), moves numpy arrays in and out at a stage boundary, forces a call's own outputs (`sync`),
computes and joins a windowed call's outputs on the device (`evaluate`, `concat`; rvc_bench.stages.Runner),
reads memory counters and describes the device that really ran. Asking for an unavailable device by name is an
error, never a silent fallback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rvc_bench import blas
from rvc_bench.machine import (
    ONNX_PROVIDERS,
    available_reason,
    cpu_model,
    mlx_devices,
    mlx_has_cuda,
    nvidia_gpus,
    onnx_devices,
    ram_bytes,
    torch_devices,
)
from rvc_bench.names import BACKENDS, REFERENCES  # noqa: F401 (REFERENCES: re-exported for the measuring code)
from rvc_bench.sampling import PeakSampler

TORCH_DEVICES = ("mps", "cuda", "cpu")
MLX_DEVICES = ("gpu", "cpu")
ONNX_DEVICES = tuple(ONNX_PROVIDERS)  # coreml, cuda, cpu
ONNX_GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"


class BackendError(RuntimeError):
    """A backend or device that cannot run here; the message says why."""


def _tree_leaves(x: Any) -> list:
    if isinstance(x, (list, tuple)):
        return [leaf for item in x for leaf in _tree_leaves(item)]
    if isinstance(x, dict):
        return [leaf for item in x.values() for leaf in _tree_leaves(item)]
    return [x]


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

    def evaluate(self, outputs: Any) -> None:
        """Compute a lazy framework's outputs now (MLX), so that what follows is built on finished arrays; eager
        frameworks already computed them (no device wait: that is sync)."""

    def extra_memory(self) -> dict[str, float]:
        """Memory figures beside the peak (torch on MPS: its live tensors and the driver's total)."""
        return {}

    def concat(self, arrays: list, axis: int) -> Any:
        """Framework arrays joined along `axis`, on the device (numpy here: ONNX Runtime and numpy give host arrays)."""
        return np.concatenate(arrays, axis=axis)

    # subclasses: from_numpy, to_numpy, sync, reset_peak_memory, peak_memory, describe


_DEVICE_CHOICE = {  # backend: (name in messages, devices in preference order, those available here)
    "torch": ("torch", TORCH_DEVICES, torch_devices),
    "mlx": ("MLX", MLX_DEVICES, mlx_devices),
    "onnx": ("onnx", ONNX_DEVICES, onnx_devices),
}


def choose_device(backend: str, device: str | None) -> str:
    """`device`, or for None/"auto" the backend's first available device in preference order; an unknown or
    unavailable device is an error, never a silent fallback."""
    shown, known, devices = _DEVICE_CHOICE[backend]
    available = devices()
    if device in (None, "auto"):
        return next(d for d in known if d in available)
    if device not in known:
        raise BackendError(f"unknown {shown} device {device!r}: choose one of {', '.join(known)}")
    if device not in available:
        raise BackendError(f"{shown} device {device!r} is not available here: {available_reason(backend, device)}")
    return device


class TorchBackend(Backend):
    def __init__(self, device: str | None = None):
        import torch

        self.torch = torch
        super().__init__("torch", choose_device("torch", device))
        self.dev = torch.device(self.device)
        self.memory_source = {
            "cuda": "torch.cuda.max_memory_allocated",
            "mps": "torch.mps.current_allocated_memory (sampled every 2 ms)",
        }.get(self.device, "")
        self._samplers: dict[str, PeakSampler] = {}
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

    def concat(self, arrays: list, axis: int):
        return self.torch.cat(arrays, dim=axis)

    def reset_peak_memory(self) -> None:
        self._extra = {}
        if self.device == "cuda":
            self.torch.cuda.reset_peak_memory_stats()
        elif self.device == "mps":
            # MPS has no peak API: sample live tensors and the driver's total (allocator pools, MPSGraph) instead.
            mps = self.torch.mps
            self._samplers = {
                "current": PeakSampler(mps.current_allocated_memory, 0.002),
                "driver": PeakSampler(mps.driver_allocated_memory, 0.002),
            }
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
        info = {
            "backend": "torch",
            "device": self.device,
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        }
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
        super().__init__("mlx", choose_device("mlx", device))
        mx.set_default_device(mx.gpu if self.device == "gpu" else mx.cpu)
        if self.device == "cpu":
            # On unified-memory Macs MLX caps itself near the GPU working set; on a CPU box its default (~80 % of
            # RAM) leaves no room for the torch reference computed in the same process at 300 s. Half of RAM does.
            mx.set_memory_limit(ram_bytes() // 2)
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

    def evaluate(self, outputs: Any) -> None:
        self.mx.eval([leaf for leaf in _tree_leaves(outputs) if isinstance(leaf, self.mx.array)])

    def concat(self, arrays: list, axis: int):
        return self.mx.concatenate(arrays, axis=axis)

    def reset_peak_memory(self) -> None:
        self.mx.reset_peak_memory()

    def peak_memory(self) -> float:
        return float(self.mx.get_peak_memory())

    def describe(self) -> dict:
        mx = self.mx
        info = {"backend": "mlx", "device": self.device, "mlx_version": mx.__version__}
        if self.device == "gpu":
            dev = mx.device_info()
            info["device_name"] = str(dev.get("device_name", "")) or ("CUDA GPU" if mlx_has_cuda() else "Metal GPU")
            info["gpu_api"] = "CUDA" if mlx_has_cuda() else "Metal"
        else:
            info["device_name"] = cpu_model()
            info.update(blas.mlx_cpu_blas())
            info["mlx_memory_limit"] = mx.get_memory_limit()
            info["mlx_cache_limit"] = mx.get_memory_limit() // 4  # as set in __init__
        return info


class OnnxBackend(Backend):
    """ONNX Runtime on one execution provider (cpu: every build; cuda: the onnxruntime-gpu wheel; coreml: the macOS
    wheel, which lets Core ML pick the Neural Engine, GPU or CPU). `session(path)` opens a model with this backend's
    options: graph optimisation ALL, as many intra-op threads as physical cores (torch's default too), sequential
    execution; describe() records them."""

    def __init__(self, device: str | None = None, threads: int | None = None):
        import onnxruntime as ort
        import psutil

        self.ort = ort
        super().__init__("onnx", choose_device("onnx", device))
        self.provider = ONNX_PROVIDERS[self.device]
        self.threads = threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
        # ORT's Python API exposes no allocator statistics on any provider: CPU memory is the process RSS the
        # measuring path records (as for torch on the CPU); on CUDA only the driver could tell.
        self.memory_source = ""
        # An optimisation variant (rvc_bench.variant_onnx) opens its sessions at another level or on a rewritten
        # graph (path -> path of the rewritten file); the default opens the file as it is.
        self.graph_optimization = ONNX_GRAPH_OPTIMIZATION
        self.graph_transform: Callable[[Path], Path] | None = None
        self.disabled_optimizers: tuple[str, ...] = ()

    @property
    def providers(self) -> list[str]:
        # Nodes a provider cannot run fall back to the CPU provider, as ONNX Runtime always does.
        return [self.provider] + (["CPUExecutionProvider"] if self.device != "cpu" else [])

    def session_options(self):
        so = self.ort.SessionOptions()
        so.graph_optimization_level = getattr(self.ort.GraphOptimizationLevel, self.graph_optimization)
        so.intra_op_num_threads = self.threads
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")  # for placement()
        return so

    def session(self, path: str | os.PathLike):
        """An InferenceSession on this device. A provider that fails to start is an error: ONNX Runtime itself
        would run the whole session on the CPU provider instead."""
        if self.graph_transform is not None:
            path = self.graph_transform(Path(path))
        session = self.ort.InferenceSession(
            os.fspath(path),
            self.session_options(),
            providers=self.providers,
            disabled_optimizers=list(self.disabled_optimizers) or None,
        )
        if session.get_providers()[0] != self.provider:
            raise BackendError(
                f"onnxruntime could not start {self.provider} for {path} "
                f"(the session has {', '.join(session.get_providers())})"
            )
        return session

    @staticmethod
    def placement(session) -> dict[str, int]:
        """Graph nodes per execution provider in `session` (what a cuda or coreml row really ran on the device)."""
        counts: dict[str, int] = {}
        for subgraph in session.get_provider_graph_assignment_info():
            counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
        return counts

    def from_numpy(self, x: np.ndarray, dtype=None) -> np.ndarray:
        # The runners feed host arrays on every provider: ORT copies them to the device inside each run (no IO
        # binding), so those copies are part of every timed call, as torch's .cpu() at the stage boundary is.
        return np.ascontiguousarray(x, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def sync(self, outputs: Any = None) -> None:
        # Nothing to wait for: InferenceSession.run returns host arrays after the whole graph ran, and on CUDA ORT
        # synchronises the provider's stream at the end of every run by default (only IO-bound device outputs with
        # the run option disable_synchronize_execution_providers=1 return early; the runners use neither).
        pass

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory(self) -> float:
        return float("nan")  # no counter in ORT's Python API (see __init__)

    def describe(self) -> dict:
        info = {
            "backend": "onnx",
            "device": self.device,
            "onnx_version": self.ort.__version__,
            "onnx_providers": ",".join(self.providers),
            "onnx_intra_op_threads": self.threads,
            "onnx_graph_optimization": self.graph_optimization,
            "onnx_execution_mode": "sequential",
        }
        if self.device == "cuda":
            info["device_name"] = (nvidia_gpus() or ["NVIDIA GPU"])[0]
            info["onnx_cuda_version"] = getattr(self.ort, "cuda_version", "")
        elif self.device == "coreml":
            info["device_name"] = f"{cpu_model()} (Core ML: Neural Engine, GPU or CPU, chosen by Core ML)"
        else:
            info["device_name"] = cpu_model()
        return info


class NumpyBackend(Backend):
    """The float64 numpy references (the log-mel's is what librosa computes), timed like a backend: the CPU
    baseline the original document compares against. Not a framework under test: no parity, no speedup."""

    def __init__(self, device: str | None = None):
        if device not in (None, "auto", "cpu"):
            raise BackendError(f"numpy runs on the cpu only, not {device!r}")
        super().__init__("numpy", "cpu")

    def from_numpy(self, x: np.ndarray, dtype=None):
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def sync(self, outputs: Any = None) -> None:
        pass  # numpy returns finished arrays

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory(self) -> float:
        return float("nan")  # no allocator counter; RSS stands in

    def describe(self) -> dict:
        return {"backend": "numpy", "device": "cpu", "numpy_version": np.__version__, "device_name": cpu_model()}


def get_backend(name: str, device: str | None = None) -> Backend:
    if name == "torch":
        return TorchBackend(device)
    if name == "mlx":
        return MLXBackend(device)
    if name == "onnx":
        return OnnxBackend(device)
    if name == "numpy":
        return NumpyBackend(device)
    raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
