"""Optimisation variants: each one really changes what runs (half activations, quantised layers, compiled calls),
keeps its fp32 islands, stays within its bound of the fp32 torch reference, and refuses what a backend cannot run."""

from __future__ import annotations

import numpy as np
import pytest

from rvc_bench import fixtures, parity, stages, tolerances, variants
from rvc_bench.backends import get_backend

pytest.importorskip("mlx.core")
pytest.importorskip("torch")

AUDIO = fixtures.clip(1.0, 0).audio[None]


def hubert(backend: str, name: str = "fp32"):
    path = stages.HUBERT.checkpoint(fixtures.cache_dir(), "tiny")
    runner = stages.HUBERT.load(get_backend(backend), path, config="tiny", version="v2")
    return variants.apply(runner, "hubert", name)


def reference() -> np.ndarray:
    return hubert("torch")(AUDIO)


def within_bound(stage: str, name: str, out, ref) -> float:
    err = parity.tensor_metrics(out, ref)["rel_l2"]
    assert err > 1e-6, f"{name} computed what fp32 computes: not applied"
    bound = tolerances.bounds(stage, f"variant-{name}")["rel_l2"]
    assert bound.holds(err), f"{stage} {name}: rel_l2 {err:.3g} breaks {bound}"
    return err


@pytest.mark.parametrize("backend, name", [("mlx", "fp16"), ("mlx", "bf16"), ("torch", "fp16"), ("torch", "bf16")])
def test_half_precision_runs_in_half_and_keeps_its_fp32_island(backend, name):
    runner = hubert(backend, name)
    raw = runner.call(*runner.inputs(AUDIO))
    half = {"fp16": "float16", "bf16": "bfloat16"}[name]
    assert str(raw.dtype).endswith(half)  # the activations, not only the weights
    island = runner.model.feature_extractor.conv_layers[0][2] if backend == "mlx" else None
    weight = (
        island.weight if island is not None else runner.model.get_submodule("feature_extractor.conv_layers.0.2").weight
    )
    assert str(weight.dtype).endswith("float32")
    within_bound("hubert", name, runner.outputs(raw), reference())


def test_fp16_all_gives_up_the_exceptions():
    """The synthesizer's f0 and NSF source in fp16: the output differs from the fp16 variant's."""
    from rvc_bench.synth import synthetic

    path = stages.SYNTH.checkpoint(fixtures.cache_dir(), "tiny")
    outs = {}
    for name in ("fp16", "fp16-all"):
        runner = variants.apply(stages.SYNTH.load(get_backend("mlx"), path, tile_frames=None), "synth", name)
        x = synthetic.make_inputs(runner.model.cfg, fixtures.clip(1.0, 0).f0, seed=0)
        outs[name] = runner(x.phone[None], None, x.pitch[None], x.pitchf[None], None, x.eps[None], x.sine_noise[None])
    assert parity.tensor_metrics(outs["fp16-all"], outs["fp16"])["rel_l2"] > 1e-4


def test_mlx_quantisation_quantises_the_linear_layers():
    import mlx.nn as nn

    for name in ("q8", "q4"):
        runner = hubert("mlx", name)
        assert sum(isinstance(m, nn.QuantizedLinear) for _, m in runner.model.named_modules()) > 10
        within_bound("hubert", name, runner(AUDIO), reference())
    with pytest.raises(variants.VariantError, match="quantises nothing"):
        path = stages.RMVPE.checkpoint(fixtures.cache_dir(), "tiny")
        variants.apply(stages.RMVPE.load(get_backend("mlx"), path), "rmvpe", "q8")


def test_torch_int8_quantises_the_linear_layers():
    import torch

    runner = hubert("torch", "int8")
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert sum(isinstance(m, dynamic) for m in runner.model.modules()) > 10
    within_bound("hubert", "int8", runner(AUDIO), reference())


def test_mlx_compiled_computes_what_eager_computes():
    out = hubert("mlx", "compiled")(AUDIO)
    assert parity.tensor_metrics(out, hubert("mlx")(AUDIO))["rel_l2"] < 1e-6


def test_what_a_backend_cannot_run_is_refused_in_one_line():
    for name, stage, backend, says in [
        ("int8", "hubert", "mlx", "does not run on mlx"),
        ("q4", "synth", "torch", "does not run on torch"),
        ("fp16", "mel", "mlx", "does not apply to the mel stage"),
        ("fp8", "hubert", "mlx", "unknown variant 'fp8'"),
    ]:
        with pytest.raises(variants.VariantError, match=says):
            variants.check(name, stage, backend)
    assert variants.parse("fp32, q8,q8") == ("fp32", "q8")


def test_a_variant_run_stores_its_rows_with_variant_and_dtype(tmp_path):
    import subprocess
    import sys

    from rvc_bench import store

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "suites/test_bench_hubert.py",
            "--benchmark-only",
            "--model-size",
            "tiny",
            "--lengths",
            "1",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--backends",
            "mlx",
            "--variants",
            "fp32,q8",
            "--store",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = store.read(tmp_path).rows
    times = rows[rows.metric == "time_warm"]
    assert set(zip(times.variant, times.dtype)) == {("v2-layer12", "float32"), ("v2-layer12+q8", "int8 weights")}
    parity_rows = rows[(rows.metric == "parity.rel_l2") & (rows.variant == "v2-layer12+q8")]
    assert parity_rows.bound.notna().all() and parity_rows.within_bound.all()
