"""Log-mel benchmark over the length grid: each backend's twin, timed, against the float64 numpy reference.

No framework is imported at module level: a benchmark process imports only the framework it measures.
"""

import numpy as np

from rvc_bench import parity
from rvc_bench.mel import reference

# Bounds on bins with energy >= 1e-2, where float32 accuracy shows directly (measured <= 1e-5, see test_mel.py),
# and on the relative L2 of the whole spectrogram (measured ~1e-5). The largest near-floor deviation grows with the
# number of frames (measured 4.8e-3 at 60 s), so long inputs are not held to an absolute bound over every bin.
ATOL_ENERGETIC = 2e-5
ENERGETIC = np.log(1e-2)
REL_L2 = 1e-4


def log_mel(backend):
    """The backend's log-mel as a callable of one device array: [N] -> torch [128, T] / MLX [T, 128]."""
    if backend.name == "torch":
        import torch

        from rvc_bench.mel.model_torch import MelSpectrogram

        model = MelSpectrogram().to(backend.device)

        def fn(x):
            with torch.inference_mode():
                return model(x)

        return fn
    from rvc_bench.mel.model_mlx import MelSpectrogram

    return MelSpectrogram()


def test_bench_mel(benchmark, bench, backend_name, seconds):
    be = bench.backend(backend_name)
    clip = bench.audio(seconds)
    x = be.from_numpy(clip.audio)
    out = bench.measure(benchmark, be, log_mel(be), (x,), stage="mel", variant="log-mel-128", seconds=seconds)
    out = be.to_numpy(out)
    out = out if backend_name == "torch" else out.T
    ref = bench.reference(("mel", seconds), lambda: reference.log_mel(clip.audio))
    metrics = parity.tensor_metrics(out, ref)
    bench.record_parity(metrics, reference="numpy-float64")
    energetic = ref > ENERGETIC
    assert np.abs(out - ref)[energetic].max() <= ATOL_ENERGETIC
    assert metrics["rel_l2"] <= REL_L2
