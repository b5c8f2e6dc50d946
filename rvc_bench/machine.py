"""What this machine is and has: CPU, memory, OS, library versions, available devices, and a stable machine id.

Nothing here imports a framework except the device probes (`torch_devices`, `mlx_devices`, `onnx_devices`,
`available_reason`), which import only the framework they ask about. Library versions come from package metadata, so recording a run's
machine facts never loads torch or MLX into the process being measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from functools import lru_cache
from glob import glob
from importlib import metadata

LABEL_ENV = "RVC_BENCH_MACHINE_LABEL"
# Distributions whose versions every run records (read from metadata, never by importing them).
LIBRARIES = ("numpy", "torch", "mlx", "mlx-metal", "mlx-cpu", "onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript",
             "pytest-benchmark")
# ONNX Runtime's devices are its execution providers, named like the other backends' devices.
ONNX_PROVIDERS = {"coreml": "CoreMLExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


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


def mlx_has_cuda() -> bool:
    import mlx.core as mx

    return hasattr(mx, "cuda") and mx.cuda.is_available()


@lru_cache(maxsize=None)
def mlx_devices() -> tuple[str, ...]:
    try:
        import mlx.core as mx
    except ImportError:
        return ()
    return ("gpu", "cpu") if mx.is_available(mx.gpu) else ("cpu",)


@lru_cache(maxsize=None)
def onnx_devices() -> tuple[str, ...]:
    """The devices whose execution provider this onnxruntime build has, in preference order (coreml, cuda, cpu)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return ()
    have = set(ort.get_available_providers())
    return tuple(d for d, provider in ONNX_PROVIDERS.items() if provider in have)


def available_devices(backend: str) -> tuple[str, ...]:
    """The devices of `backend` (torch, mlx, onnx) this machine can run, in preference order."""
    return {"torch": torch_devices, "mlx": mlx_devices, "onnx": onnx_devices}[backend]()


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
    if backend == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        build = f"this onnxruntime {ort.__version__} build has only {', '.join(ort.get_available_providers())}"
        if device == "cuda":
            return f"{build}; CUDA needs the onnxruntime-gpu wheel (instead of onnxruntime) and an NVIDIA GPU"
        if device == "coreml":
            if system != "Darwin":
                return f"the CoreML execution provider needs macOS (this is {system} {machine})"
            return f"{build}; the CoreML provider ships in the macOS onnxruntime wheel"
    return "available"


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return ""


@lru_cache(maxsize=None)
def cpu_model() -> str:
    if sys.platform == "darwin":
        return _sysctl("machdep.cpu.brand_string") or platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_bytes() -> int:
    import psutil

    return psutil.virtual_memory().total


def nvidia_gpus() -> list[str]:
    """NVIDIA GPU models from the Linux driver's files (no CUDA initialisation)."""
    names = []
    for path in sorted(glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(path) as f:
                names += [line.split(":", 1)[1].strip() for line in f if line.startswith("Model:")]
        except OSError:
            continue
    return names


def library_versions() -> dict[str, str | None]:
    versions = {}
    for dist in LIBRARIES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def machine_info() -> dict:
    """Run-level metadata: host, OS, CPU, memory, GPUs, Python and library versions. Imports no framework."""
    info = {
        "hostname": platform.node(), "system": platform.system(), "release": platform.release(),
        "machine": platform.machine(), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "ram_bytes": ram_bytes(),
        "python": platform.python_version(), "gpus": nvidia_gpus(), "libraries": library_versions(),
    }
    if sys.platform == "darwin":
        info["macos"] = platform.mac_ver()[0]
        info["hw_model"] = _sysctl("hw.model")
    return info


def machine_label(explicit: str | None = None) -> str:
    """The user's name for this machine (--machine-label, else $RVC_BENCH_MACHINE_LABEL), or ""."""
    label = explicit if explicit is not None else os.environ.get(LABEL_ENV, "")
    label = label.strip()
    if label and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}", label):
        raise ValueError(f"machine label {label!r}: use 1-40 letters, digits, '.', '_' or '-'")
    return label


def machine_id(info: dict, label: str = "") -> str:
    """A stable id from the facts that decide speed (CPU, cores, RAM, OS, architecture, GPUs, Mac model) plus the
    optional label. The hostname is left out on purpose: CI containers get a new one every job."""
    facts = {k: info.get(k) for k in ("system", "machine", "cpu", "cpu_count", "gpus", "hw_model")}
    facts["ram_gib"] = round(info.get("ram_bytes", 0) / 2**30)
    facts["label"] = label
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:8]
    slug = label or re.sub(r"[^a-z0-9]+", "-", str(info.get("cpu", "machine")).lower()).strip("-")[:24] or "machine"
    return f"{slug.lower()}-{digest}"
