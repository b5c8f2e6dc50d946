"""RMVPE benchmark: log-mel + network + decode on the backend, timed as one call, over the length grid.

No framework is imported at module level: each backend's model comes from the stage registry's loader, MLX's from
the checkpoint converted once to .safetensors, ONNX Runtime's from the graphs (log-mel, network) exported once by a
child process, so a benchmark process imports only the framework it measures.
"""

from __future__ import annotations

import numpy as np

from rvc_bench import parity, stages

_MODELS: dict = {}


def rmvpe(backend, cache, size: str):
    """The RMVPE stage (audio -> salience, f0) of the synthetic checkpoint of `size` on `backend`, kept per session."""
    key = (backend.label, size)
    if key not in _MODELS:
        path = stages.RMVPE.checkpoint_for(backend.name, stages.RMVPE.checkpoint(cache, size), cache)
        _MODELS[key] = stages.RMVPE.load(backend, path)
    return _MODELS[key]


def torch_reference(cache, size: str, audio: np.ndarray):
    """(salience, f0) of the torch twin on the CPU in fp32: the reference every backend is compared with."""
    import torch

    return stages.RMVPE.convert.load_torch(stages.RMVPE.checkpoint(cache, size))(torch.from_numpy(audio))


def test_bench_rmvpe(benchmark, bench, backend_name, seconds):
    be = bench.backend(backend_name)
    size = bench.model_size
    clip = bench.audio(seconds)
    model = rmvpe(be, bench.cache_dir, size)
    x = be.from_numpy(clip.audio)
    salience, f0 = bench.measure(benchmark, be, model, (x,), stage="rmvpe", variant="e2e", seconds=seconds)
    # The torch-cpu run's own output when it ran first, else computed here.
    own = (salience, f0) if backend_name == "torch" and be.device == "cpu" else None
    s_ref, f_ref = bench.reference(("rmvpe", size, seconds),
                                   lambda: own or torch_reference(bench.cache_dir, size, clip.audio))
    sal_metrics = parity.tensor_metrics(salience, s_ref)
    f0_metrics = parity.pitch_metrics(f0, f_ref)
    assert salience.shape == (clip.audio.size // 160 + 1, 360)
    # The table's "benchmark" bounds (measurements in test_rmvpe.py): salience of the whole stage, each backend with
    # its own log-mel, and the f0 decoded from it.
    bench.record_parity({**sal_metrics, **f0_metrics})
