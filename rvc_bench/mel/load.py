"""The log-mel's loaders for the stage registry: it has no weights, so each builds its twin on an adapter's device.

Importing this module imports no framework; a loader imports its framework when it is called.
"""

from __future__ import annotations


def load_torch(backend):
    """The torch log-mel ([N] -> [128, T]) as a callable run in inference mode, on the adapter's device."""
    import torch

    from rvc_bench.mel.model_torch import MelSpectrogram

    model = MelSpectrogram().to(backend.device)

    def log_mel(audio):
        with torch.inference_mode():
            return model(audio)

    return log_mel


def load_mlx(backend):
    """The MLX log-mel ([N] -> [T, 128]) on the default device the adapter set."""
    from rvc_bench.mel.model_mlx import MelSpectrogram

    return MelSpectrogram()


def load_onnx(backend):
    """The exported log-mel ([N] -> [128, T]) on ONNX Runtime, from the fixture cache (exported once by a child)."""
    from rvc_bench.mel import model_onnx

    return model_onnx.load(backend)
