"""ONNX log-mel: the torch twin exported (ONNX STFT op, opset 18) and run by ONNX Runtime; numpy in, numpy out.

The graph holds no weights (the mel basis and the window are constants of the export), so its cache key is the
exporter's alone. ONNX Runtime's STFT kernel is less exact than torch's FFT on energetic bins (see
references/parity_tolerances.csv, the onnx row of mel).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rvc_bench import onnx_graph
from rvc_bench.mel import N_FFT, N_MELS, SAMPLE_RATE
from rvc_bench.onnx_graph import Port

STAGE = "mel"
VARIANT = "log-mel-128"
INPUTS = (Port("audio", "float32", (1, "samples")),)
OUTPUTS = (Port("mel", "float32", (1, N_MELS, "frames")),)
MIN_SAMPLES = N_FFT // 2 + 1  # reflect padding by 512 needs more than 512 samples


def export(path: str | os.PathLike, metadata: dict | None = None) -> Path:
    import torch

    from rvc_bench.mel.model_torch import MelSpectrogram as TorchMel

    example = torch.randn(1, SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    samples = torch.export.Dim("samples", min=MIN_SAMPLES)
    return onnx_graph.export(
        TorchMel(),
        (example,),
        path,
        INPUTS,
        OUTPUTS,
        {"audio": {1: samples}},
        {"stage": STAGE, "variant": VARIANT, **(metadata or {})},
    )


def export_path(checkpoint: None, cache_dir: str | os.PathLike) -> Path:
    """Where the export is cached (the log-mel has no checkpoint: pass None)."""
    return onnx_graph.export_path(cache_dir, STAGE, VARIANT, checkpoint)


def ensure(checkpoint: None, cache_dir: str | os.PathLike) -> Path:
    """The cached export, made in this process on first use (imports torch)."""
    return onnx_graph.cached_export(cache_dir, STAGE, VARIANT, checkpoint, export)


def exported(checkpoint: None, cache_dir: str | os.PathLike) -> Path:
    """The cached export, made in a child process on first use (this process imports no torch)."""
    return onnx_graph.ensure_exported(export_path(checkpoint, cache_dir), __name__, checkpoint, cache_dir)


class MelSpectrogram:
    """[N] or [B, N] float32 -> [128, T] or [B, 128, T], T = N // 160 + 1, as the torch twin."""

    def __init__(self, path: str | os.PathLike, backend):
        self.backend = backend
        self.session, self.meta = onnx_graph.open_session(path, backend, STAGE)
        onnx_graph.check_ports(self.session.get_inputs(), INPUTS, "input", str(path))
        onnx_graph.check_ports(self.session.get_outputs(), OUTPUTS, "output", str(path))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.shape[-1] < MIN_SAMPLES:
            raise ValueError(f"reflect padding needs more than {N_FFT // 2} samples, got {audio.shape[-1]}")
        rows = audio.reshape(-1, audio.shape[-1])
        mel = np.concatenate([self.session.run(None, {"audio": row[None]})[0] for row in rows])
        return mel.reshape(*audio.shape[:-1], N_MELS, -1)


def load(backend, cache_dir: str | os.PathLike | None = None) -> MelSpectrogram:
    """The log-mel on an OnnxBackend, from the export cache (default: the fixture cache)."""
    from rvc_bench.fixtures import cache_dir as default_cache

    return MelSpectrogram(exported(None, cache_dir or default_cache()), backend)
