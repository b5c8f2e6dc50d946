"""ONNX Runtime adapter: the third backend, with the surface of TorchBackend and MLXBackend (rvc_bench.backends).

Devices are ONNX Runtime execution providers, named like the other backends' devices:
  cpu     CPUExecutionProvider     every onnxruntime build
  cuda    CUDAExecutionProvider    the onnxruntime-gpu wheel on an NVIDIA machine
  coreml  CoreMLExecutionProvider  the macOS wheel (Apple Neural Engine / GPU / CPU, chosen by Core ML)
The default is the first available in the order coreml, cuda, cpu (torch's is mps, cuda, cpu). A device asked for
by name that the installed build lacks is a BackendError; so is a session whose provider failed to start (ONNX
Runtime itself would silently run such a session on the CPU provider instead).

Sessions run with graph optimisation ALL and as many intra-op threads as the machine has physical cores (torch's
default too), sequential execution; describe() records all of it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from rvc_bench.backends import Backend, BackendError, cpu_model

ONNX_DEVICES = ("coreml", "cuda", "cpu")
PROVIDERS = {"coreml": "CoreMLExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"


def onnx_devices() -> tuple[str, ...]:
    """The devices whose execution provider this onnxruntime build has, in preference order."""
    try:
        import onnxruntime as ort
    except ImportError:
        return ()
    have = set(ort.get_available_providers())
    return tuple(d for d in ONNX_DEVICES if PROVIDERS[d] in have)


def onnx_unavailable_reason(device: str) -> str:
    """Why an ONNX Runtime device is missing, in one line."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime)"
    system, machine = platform.system(), platform.machine()
    build = f"this onnxruntime {ort.__version__} build has only {', '.join(ort.get_available_providers())}"
    if device == "cuda":
        return f"{build}; CUDA needs the onnxruntime-gpu wheel (instead of onnxruntime) and an NVIDIA GPU"
    if device == "coreml":
        if system != "Darwin":
            return f"the CoreML execution provider needs macOS (this is {system} {machine})"
        return f"{build}; the CoreML provider ships in the macOS onnxruntime wheel"
    return "available"


def _nvidia_gpu_name() -> str:
    """GPU 0's name from the driver (ONNX Runtime does not report it)."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        out = ""
    return out or "NVIDIA GPU (name unknown: nvidia-smi gave none)"


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class OnnxBackend(Backend):
    """ONNX Runtime on one execution provider; `session(path)` opens a model with this backend's options."""

    def __init__(self, device: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.ort = ort
        available = onnx_devices()
        if device in (None, "auto"):
            device = next(d for d in ONNX_DEVICES if d in available)
        elif device not in ONNX_DEVICES:
            raise BackendError(f"unknown onnx device {device!r}: choose one of {', '.join(ONNX_DEVICES)}")
        elif device not in available:
            raise BackendError(f"onnx device {device!r} is not available here: {onnx_unavailable_reason(device)}")
        super().__init__("onnx", device)
        self.provider = PROVIDERS[device]
        self.threads = threads or physical_cores()
        # ORT's Python API has no allocator statistics (the C API's are not bound), on any provider: CPU memory is
        # the process RSS the measuring path records, as for torch on CPU; on CUDA only the driver can tell.
        self.memory_source = ""

    def session_options(self):
        so = self.ort.SessionOptions()
        so.graph_optimization_level = getattr(self.ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION)
        so.intra_op_num_threads = self.threads
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")  # for placement()
        return so

    def session(self, path: str | os.PathLike):
        """An InferenceSession on this device; nodes the provider cannot run fall back to the CPU provider, as
        ONNX Runtime always does, but a provider that fails to start is an error, not a CPU run."""
        providers = [self.provider] + (["CPUExecutionProvider"] if self.device != "cpu" else [])
        session = self.ort.InferenceSession(str(Path(path)), self.session_options(), providers=providers)
        if session.get_providers()[0] != self.provider:
            raise BackendError(f"onnxruntime could not start {self.provider} for {path} "
                               f"(the session has {', '.join(session.get_providers())})")
        return session

    @staticmethod
    def placement(session) -> dict[str, int]:
        """Graph nodes per execution provider in `session` (what a cuda or coreml row really ran on the device)."""
        counts: dict[str, int] = {}
        for subgraph in session.get_provider_graph_assignment_info():
            counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
        return counts

    def from_numpy(self, x: np.ndarray, dtype=None) -> np.ndarray:
        # Runners feed host arrays on every provider: ORT copies them to the device inside Run (IO binding, which
        # would keep inputs and outputs on a GPU, is not used yet), so those copies are part of every timed call.
        return np.ascontiguousarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.numpy() if isinstance(x, self.ort.OrtValue) else np.asarray(x)

    def sync(self, outputs: Any = None) -> None:
        # Nothing to wait for. InferenceSession.run returns host arrays after the whole graph ran; on CUDA ORT also
        # synchronises the provider's stream at the end of every Run by default. Only a run with IO-bound device
        # outputs and the run option disable_synchronize_execution_providers=1 returns early (then
        # IOBinding.synchronize_outputs() is the wait); the runners use neither.
        pass

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory(self) -> float:
        """NaN: ONNX Runtime exposes no peak counter to Python (see __init__)."""
        return float("nan")

    def extra_memory(self) -> dict[str, float]:
        return {}

    def describe(self) -> dict:
        ort = self.ort
        info = {"backend": "onnx", "device": self.device, "onnxruntime_version": ort.__version__,
                "onnx_providers": ",".join([self.provider] + (["CPUExecutionProvider"] if self.device != "cpu" else [])),
                "onnx_intra_op_threads": self.threads, "onnx_graph_optimization": GRAPH_OPTIMIZATION,
                "onnx_execution_mode": "sequential"}
        if self.device == "cuda":
            info["device_name"] = _nvidia_gpu_name()
            info["onnx_cuda_version"] = getattr(ort, "cuda_version", "")
        elif self.device == "coreml":
            info["device_name"] = f"{cpu_model()} (CoreMLExecutionProvider: ANE/GPU/CPU chosen by Core ML)"
        else:
            info["device_name"] = cpu_model()
        return info
