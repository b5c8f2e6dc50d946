"""HuBERT / ContentVec benchmark: v2 features (layer 12), windowed like the pipeline, over the length grid.

No framework is imported at module level: each backend's model comes from the stage registry's loader, MLX's from
the checkpoint converted once to .safetensors, ONNX Runtime's from the v2 graph exported once by a child process, so
a benchmark process imports only the framework it measures.
"""

from __future__ import annotations

from rvc_bench import parity, stages
from rvc_bench.backends import get_backend
from rvc_bench.hubert import get_config

_MODELS: dict = {}


def checkpoint(bench) -> tuple:
    """(path, preset): hubert_base.pt from --weights-dir for full-size runs when there is one, else synthetic."""
    real = bench.weights_dir / "hubert_base.pt" if bench.weights_dir else None
    if real is not None and real.is_file() and bench.model_size == "full":
        return real, "full"
    return stages.HUBERT.checkpoint(bench.cache_dir, bench.model_size), bench.model_size


def hubert(backend, cache, path, size: str, optimise=None, optimisation: str = "fp32"):
    key = (backend.label, str(path), optimisation)
    if key not in _MODELS:
        loadable = stages.HUBERT.checkpoint_for(backend.name, path, cache, config=size, version="v2")
        runner = stages.HUBERT.load(backend, loadable, config=size, version="v2")
        _MODELS[key] = optimise(runner, "hubert", optimisation) if optimise else runner
    return _MODELS[key]


def torch_reference(path, size: str, audio):
    """v2 features of the torch twin on the CPU in fp32: the reference every backend is compared with."""
    return stages.HUBERT.load(get_backend("torch", "cpu"), path, config=size, version="v2")(audio)


def test_bench_hubert(benchmark, bench, backend_name, seconds, optimisation):
    be = bench.backend(backend_name)
    path, size = checkpoint(bench)
    runner = hubert(be, bench.cache_dir, path, size, bench.optimised, optimisation)
    clip = bench.audio(seconds)
    out = bench.measure(
        benchmark,
        be,
        runner.call,
        runner.inputs(clip.audio[None]),
        stage="hubert",
        variant="v2-layer12",
        seconds=seconds,
        optimisation=optimisation,
    )
    out = runner.outputs(out)
    ref = bench.reference(
        ("hubert", "v2", str(path), seconds),
        (lambda: out)
        if (backend_name, be.device, optimisation) == ("torch", "cpu", "fp32")
        else (lambda: torch_reference(path, size, clip.audio[None])),
    )
    assert out.shape == (1, get_config(size).num_frames(clip.audio.size), get_config(size).embed_dim)
    # The table's benchmark bound: relative L2 against torch, fp32, same weights (measurements in test_hubert.py:
    # MLX <= 2.5e-6 per layer at full size, 9e-6 for 60 s windowed; tests/test_onnx.py), any size and length.
    bench.record_parity(parity.tensor_metrics(out, ref), reference="torch")
