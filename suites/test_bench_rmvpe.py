"""RMVPE benchmark: log-mel + network + decode on the backend, timed as one call, over the length grid.

No framework is imported at module level: each backend's model comes from the stage registry's loader, MLX's from
the checkpoint converted once to .safetensors, ONNX Runtime's from the graphs (log-mel, network) exported once by a
child process, so a benchmark process imports only the framework it measures.
"""

from __future__ import annotations

import numpy as np
import pytest

from rvc_bench import parity, stages
from rvc_bench.audio import HOP
from rvc_bench.backends import get_backend
from rvc_bench.rmvpe.config import THRESHOLD, bounded_chunk, preset

_MODELS: dict = {}

# Chunking variants beside the default ("e2e": inputs longer than one window of CHUNK_FRAMES + 2 overlaps run the
# U-Net in overlapped chunks and the BiGRU whole, which computes the whole pass's numbers), for the report's chunking
# table: the whole sequence in one call, and the whole network per chunk (the BiGRU's state cut at every chunk), as
# the old MLX default ran it (4096 frames + 1024 of overlap) and without overlap, among them the original port's 32k
# frames (measured rows, never offered as a default). Their parity is against the same backend: the whole row against
# the default's output (what the bounded default costs), the others against the whole sequence, salience and pitch.
CHUNKING = {
    "e2e": {},
    "whole": {"chunk_frames": None},
    "chunked-4096-cut-gru": {"chunk_frames": 4096, "overlap_frames": 1024, "cut_gru": True},
    "chunked-4096-no-overlap": {"chunk_frames": 4096, "overlap_frames": 0, "cut_gru": True},
    "chunked-32768-no-overlap": {"chunk_frames": 32768, "overlap_frames": 0, "cut_gru": True},
}


def rmvpe(backend, cache, size: str, variant: str = "e2e", optimise=None, optimisation: str = "fp32"):
    """The RMVPE stage (audio -> salience, f0) of the synthetic checkpoint of `size` on `backend`, kept per session;
    optimise(runner, stage, name): applies an optimisation variant (bench.optimised)."""
    key = (backend.label, size, variant, optimisation)
    if key not in _MODELS:
        path = stages.RMVPE.checkpoint_for(backend.name, stages.RMVPE.checkpoint(cache, size), cache)
        runner = stages.RMVPE.load(backend, path, **CHUNKING[variant])
        _MODELS[key] = optimise(runner, "rmvpe", optimisation) if optimise else runner
    return _MODELS[key]


def torch_reference(cache, size: str, audio: np.ndarray):
    """(salience, f0) of the torch twin on the CPU in fp32: the reference every backend is compared with."""
    return stages.RMVPE.load(get_backend("torch", "cpu"), stages.RMVPE.checkpoint(cache, size))(audio)


def test_bench_rmvpe(benchmark, bench, backend_name, seconds, optimisation):
    be = bench.backend(backend_name)
    size = bench.model_size
    clip = bench.audio(seconds)
    runner = rmvpe(be, bench.cache_dir, size, optimise=bench.optimised, optimisation=optimisation)
    out = bench.measure(
        benchmark,
        be,
        runner.call,
        runner.inputs(clip.audio),
        stage="rmvpe",
        variant="e2e",
        seconds=seconds,
        optimisation=optimisation,
    )
    salience, f0 = runner.outputs(out)
    # The fp32 torch-cpu run's own output when it ran first, else computed here.
    own = (salience, f0) if (backend_name, be.device, optimisation) == ("torch", "cpu", "fp32") else None
    s_ref, f_ref = bench.reference(
        ("rmvpe", size, seconds), lambda: own or torch_reference(bench.cache_dir, size, clip.audio)
    )
    sal_metrics = parity.tensor_metrics(salience, s_ref)
    f0_metrics = parity.pitch_metrics(f0, f_ref, parity.decision_margin(s_ref, THRESHOLD))
    assert salience.shape == (clip.audio.size // 160 + 1, 360)
    # The table's "benchmark" bounds (measurements in test_rmvpe.py): salience of the whole stage, each backend with
    # its own log-mel, and the f0 decoded from it.
    bench.record_parity({**sal_metrics, **f0_metrics})
    if optimisation == "fp32":
        bench.reference(("rmvpe-own", be.label, size, seconds, "e2e"), lambda: (salience, f0))


def same_as(variant: str, default_chunk: int | None, n_frames: int, overlap: int) -> str | None:
    """The variant that computes exactly what `variant` computes on n_frames of log-mel, if any: measuring it again
    would only repeat a row (at 5 s every variant runs the whole sequence; torch's default is whole)."""
    opts = {
        "chunk_frames": default_chunk,
        "overlap_frames": overlap,
        **CHUNKING["e2e" if variant == "whole" else variant],
    }
    runs_whole = bounded_chunk(n_frames, opts["chunk_frames"], opts["overlap_frames"]) is None
    return ("e2e" if variant == "whole" else "whole") if runs_whole else None


@pytest.mark.parametrize("variant", [v for v in CHUNKING if v != "e2e"])
def test_bench_rmvpe_chunking(benchmark, bench, backend_name, seconds, variant):
    be = bench.backend(backend_name)
    size = bench.model_size
    clip = bench.audio(seconds)
    default = rmvpe(be, bench.cache_dir, size)
    same = same_as(variant, default.model.chunk_frames, clip.audio.size // HOP + 1, preset(size).default_overlap)
    if same:
        pytest.skip(f"at {seconds:g} s {variant} computes exactly what {same} computes on {backend_name}")
    runner = rmvpe(be, bench.cache_dir, size, variant)
    out = bench.measure(
        benchmark, be, runner.call, runner.inputs(clip.audio), stage="rmvpe", variant=variant, seconds=seconds
    )
    salience, f0 = runner.outputs(out)
    against = "e2e" if variant == "whole" else "whole"
    s_ref, f_ref = bench.reference(
        ("rmvpe-own", be.label, size, seconds, against), lambda: rmvpe(be, bench.cache_dir, size, against)(clip.audio)
    )
    if variant == "whole":
        bench.reference(("rmvpe-own", be.label, size, seconds, "whole"), lambda: (salience, f0))
    # Against the same backend: the default's chunks are held to the "chunked" bounds; the BiGRU-cutting rows are
    # measured only, with what they cost in salience, cents and voicing (see test_rmvpe.py).
    bench.record_parity(
        {
            **parity.tensor_metrics(salience, s_ref),
            **parity.pitch_metrics(f0, f_ref, parity.decision_margin(s_ref, THRESHOLD)),
        },
        reference=f"{backend_name} {against}",
        check="chunked" if variant == "whole" else None,
    )
