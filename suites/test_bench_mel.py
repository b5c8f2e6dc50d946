"""Log-mel benchmark over the length grid: each backend's twin, timed, against the float64 numpy reference.

No framework is imported at module level: a benchmark process imports only the framework it measures.
"""

import numpy as np
import pytest

from rvc_bench import parity, stages
from rvc_bench.mel import reference

# Bins with energy >= 1e-2 (log domain), where float32 accuracy shows directly; near the 1e-5 floor one float32
# rounding is ~1e-3 after the log and the largest such deviation grows with the number of frames (4.8e-3 at 60 s).
# So the log-mel is held to max_abs_energetic and the relative L2 of the whole spectrogram; their bounds are in
# references/parity_tolerances.csv.
ENERGETIC = np.log(1e-2)


def mel_metrics(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """parity.tensor_metrics plus max_abs_energetic: max |out - ref| over the bins where ref > ENERGETIC."""
    return {**parity.tensor_metrics(out, ref), "max_abs_energetic": float(np.abs(out - ref)[ref > ENERGETIC].max())}


def test_bench_mel(benchmark, bench, backend_name, seconds):
    be = bench.backend(backend_name)
    clip = bench.audio(seconds)
    runner = stages.MEL.load(be)
    out = bench.measure(
        benchmark, be, runner.call, runner.inputs(clip.audio), stage="mel", variant="log-mel-128", seconds=seconds
    )
    out = runner.outputs(out)  # [T, 128]
    ref = bench.reference(("mel", seconds), lambda: reference.log_mel(clip.audio))  # [128, T]
    bench.record_parity(mel_metrics(out.T, ref), reference="numpy-float64")  # asserts the table's bounds


def test_bench_mel_reference(benchmark, bench, seconds):
    """The float64 numpy log-mel (what librosa computes) timed on the CPU: the "before" of the original document's
    mel table. Measured once per run, in the process that measures torch (a CPU baseline needs no MLX)."""
    if "torch" not in bench.backend_names:
        pytest.skip("measured in the torch benchmark process")
    clip = bench.audio(seconds)
    bench.measure(
        benchmark,
        bench.backend("numpy"),
        reference.log_mel,
        (clip.audio,),
        stage="mel",
        variant="log-mel-128",
        seconds=seconds,
        dtype="float64",
    )
