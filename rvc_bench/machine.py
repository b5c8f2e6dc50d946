"""What this machine is and has: CPU, memory, OS, library versions, available devices, and a stable machine id.

Nothing here imports a framework except the device probes (`torch_devices`, `mlx_devices`, `onnx_devices`,
`available_reason`), which import only the framework they ask about. Library versions come from package
metadata, so recording a run's machine facts never loads torch or MLX into the process being measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from glob import glob
from importlib import metadata

LABEL_ENV = "RVC_BENCH_MACHINE_LABEL"
# Distributions whose versions every run records (read from metadata, never by importing them).
LIBRARIES = (
    "numpy",
    "torch",
    "mlx",
    "mlx-metal",
    "mlx-cpu",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "onnxscript",
    "pytest-benchmark",
)
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


# ---------------------------------------------------------------------------------------------------------------
# Diagnosis: one table, (backend, device) -> whether it runs here, why not, and the command that fixes it

INSTALL = "pip install -e ."
NOT_INSTALLED = {
    "torch": "torch is not installed",
    "mlx": "mlx is not installed (pip install 'mlx[cpu]' on Linux, 'mlx' on macOS arm64)",
    "onnx": "onnxruntime is not installed (pip install onnxruntime)",
}
FRAMEWORK_MODULES = {"torch": "torch", "mlx": "mlx.core", "onnx": "onnxruntime"}


@dataclass(frozen=True)
class Diagnosis:
    backend: str
    device: str
    available: bool
    reason: str = ""  # why it is missing, in one line
    fix: str = ""  # the command that makes it available here, or why none can

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.device}"


def framework_version(backend: str) -> str | None:
    """The installed framework's version (importing it), or None."""
    try:
        return __import__(FRAMEWORK_MODULES[backend], fromlist=["_"]).__version__
    except ImportError:
        return None


def _host() -> tuple[str, bool, bool]:
    """(what this is, Apple Silicon Mac, NVIDIA driver present)."""
    system, arch = platform.system(), platform.machine()
    return f"{system} {arch}", system == "Darwin" and arch == "arm64", os.path.exists("/proc/driver/nvidia/version")


def _torch_missing(device: str) -> tuple[str, str]:
    import torch

    host, apple, nvidia = _host()
    if device == "mps":
        if platform.system() != "Darwin":
            return f"MPS needs macOS on Apple Silicon (this is {host})", "none here: needs a Mac with Apple Silicon"
        return (
            "torch.backends.mps.is_available() is False (macOS < 12.3 or a torch build without MPS)",
            "pip install -U torch (MPS needs macOS >= 12.3)" if apple else "none here: needs a Mac with Apple Silicon",
        )
    reason = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
    if not nvidia:
        return reason, "none here: no NVIDIA GPU"
    return reason, "pip install --force-reinstall 'torch>=2.6,<2.14' (PyPI's Linux x86_64 torch wheels are CUDA builds)"


def _mlx_missing(device: str) -> tuple[str, str]:
    host, apple, nvidia = _host()
    if platform.system() == "Darwin":
        return (
            "MLX sees no Metal GPU (Intel Mac or a virtual machine without Metal)",
            "none here: MLX sees no Metal GPU (a virtual machine?)"
            if apple
            else "none here: needs a Mac with Apple Silicon",
        )
    reason = "this MLX build has no GPU backend (mlx[cpu]); install mlx[cuda12] on an NVIDIA machine"
    return (
        reason,
        "pip install -e '.[cuda]'" if nvidia else "none here: no NVIDIA GPU (Metal needs a Mac with Apple Silicon)",
    )


def _onnx_missing(device: str) -> tuple[str, str]:
    import onnxruntime as ort

    host, _, nvidia = _host()
    build = f"this onnxruntime {ort.__version__} build has only {', '.join(ort.get_available_providers())}"
    if device == "coreml":
        if platform.system() != "Darwin":
            return f"the CoreML execution provider needs macOS (this is {host})", "none here: needs macOS"
        return (
            f"{build}; the CoreML provider ships in the macOS onnxruntime wheel",
            "pip install -U onnxruntime (the macOS wheel has CoreML)",
        )
    return (
        f"{build}; CUDA needs the onnxruntime-gpu wheel (instead of onnxruntime) and an NVIDIA GPU",
        "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (one module, two wheels: never both)"
        if nvidia
        else "none here: no NVIDIA GPU",
    )


def diagnose(backend: str, device: str) -> Diagnosis:
    """Whether `device` of `backend` runs here; if not, why, and the fix (installing the framework, when it is
    missing)."""
    if device in available_devices(backend):
        return Diagnosis(backend, device, True)
    if framework_version(backend) is None:
        return Diagnosis(backend, device, False, NOT_INSTALLED[backend], INSTALL)
    missing = {"torch": _torch_missing, "mlx": _mlx_missing, "onnx": _onnx_missing}[backend]
    return Diagnosis(backend, device, False, *missing(device))


def diagnosis(devices: dict[str, tuple[str, ...]]) -> list[Diagnosis]:
    """The table for every (backend, device) of `devices` (backend -> its devices, in preference order)."""
    return [diagnose(backend, device) for backend, known in devices.items() for device in known]


def available_reason(backend: str, device: str) -> str:
    """Why a device is missing, in one line ("available" when it is not)."""
    return diagnose(backend, device).reason or "available"


def mlx_blas_child(choice: str) -> dict:
    """MLX's BLAS and sgemm speed in a fresh process started the way `rvc-bench run` starts MLX's."""
    from rvc_bench import blas

    code = "import json; from rvc_bench import blas; print(json.dumps(blas.mlx_cpu_blas()))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=blas.process_env("mlx", choice), capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"MLX does not start with --mlx-blas {choice} (broken install?): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class CpuBlas:
    """The CPU BLAS each backend's process gets: sgemm GFLOP/s and library, here and in `rvc-bench run`."""

    torch: dict
    mlx_here: dict
    mlx_run: dict | None  # MLX's process with the preload `rvc-bench run` gives it; None: no preload
    fixes: tuple[tuple[str, str], ...]  # (what, the command)


def cpu_blas() -> CpuBlas | None:
    """The CPU BLAS probes (None unless both torch and MLX run on the CPU here)."""
    from rvc_bench import blas

    if "cpu" not in mlx_devices() or "cpu" not in torch_devices():
        return None
    torch_info, here, child, fixes = blas.torch_cpu_blas(), blas.mlx_cpu_blas(), None, []
    preload = blas.select("auto")
    if preload is not None:
        child = mlx_blas_child("auto")
        if here["mlx_cpu_blas_path"] != child["mlx_cpu_blas_path"]:
            env = " ".join(f"{k}={v}" for k, v in {"LD_PRELOAD": preload.path, **preload.env}.items())
            fixes.append(
                (
                    "MLX BLAS in `pytest suites/` run directly",
                    f"{env} python -m pytest suites/ --benchmark-only --backends mlx "
                    "(then --backends torch without it: the preload would replace torch's sgemm)",
                )
            )
    elif sys.platform.startswith("linux"):
        fixes.append(
            (
                "fast BLAS for MLX",
                "pip install mkl" if platform.machine() == "x86_64" else "apt-get install libopenblas0-pthread",
            )
        )
    return CpuBlas(torch_info, here, child, tuple(fixes))


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
        "hostname": platform.node(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": ram_bytes(),
        "python": platform.python_version(),
        "gpus": nvidia_gpus(),
        "libraries": library_versions(),
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
