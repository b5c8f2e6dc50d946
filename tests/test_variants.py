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


def test_torch_channels_last_changes_the_layout_not_the_numbers():
    """channels-last puts RMVPE's 2-D convolutions in NHWC (the salience within fp32's bounds of the eager twin);
    a network with no 2-D convolution is refused by name, and a pipeline applies it to RMVPE alone."""
    import torch

    path = stages.RMVPE.checkpoint(fixtures.cache_dir(), "tiny")
    load = lambda: stages.RMVPE.load(get_backend("torch"), path)  # noqa: E731
    runner = variants.apply(load(), "rmvpe", "channels-last")
    convs = [m for m in runner.model.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not convs[1].weight.is_contiguous()  # a 1x1 or single-channel weight is both: the second is 3x3
    salience, ref = runner(AUDIO[0])[0], load()(AUDIO[0])[0]
    assert parity.tensor_metrics(salience, ref)["rel_l2"] < 1e-5
    with pytest.raises(variants.NotApplicable, match="no 2-D convolution"):
        hubert("torch", "channels-last")


def _graph(model):
    """The graph file an ONNX variant's sessions opened (the rewritten export)."""
    import onnx

    return onnx.load(model.backend.graph_transform(model.path))


def test_onnx_int8_quantises_the_matmuls_without_saturating():
    """ONNX Runtime's dynamic int8 on the MatMuls; RMVPE's salience stays within the int8 bounds (with signed
    weights, x86's u8s8 kernels saturate and put its pitch 5000 cents off)."""
    runner = hubert("onnx", "int8")
    ops = [n.op_type for n in _graph(runner.model).graph.node]
    assert ops.count("MatMulInteger") > 10  # each Linear (attention's activation products stay float)
    within_bound("hubert", "int8", runner(AUDIO), reference())
    path = stages.RMVPE.checkpoint(fixtures.cache_dir(), "tiny")
    audio = AUDIO[0]
    f0 = {}
    for backend, name in (("torch", "fp32"), ("onnx", "int8")):
        rmvpe = stages.RMVPE.load(
            get_backend(backend), stages.RMVPE.checkpoint_for(backend, path, fixtures.cache_dir())
        )
        f0[name] = variants.apply(rmvpe, "rmvpe", name)(audio)[-1]  # (salience, f0)
    metrics = parity.pitch_metrics(f0["int8"], f0["fp32"])
    for metric, bound in tolerances.bounds("rmvpe", "variant-int8").items():
        assert bound.holds(metrics[metric]), f"{metric} {metrics[metric]:.3g} breaks {bound}"


def test_onnx_fp16_keeps_the_twins_fp32_parts():
    """The float16 graph keeps HuBERT's first GroupNorm in fp32 and feeds the synthesizer's f0 to its source
    unrounded, as the twins do; ONNX Runtime's graph levels open the same graph at another level."""
    import onnx

    runner = hubert("onnx", "fp16")
    graph = _graph(runner.model).graph
    norm = [n for n in graph.node if "feature_extractor.conv_layers.0.2" in str(n.metadata_props)]
    weights = {i.name: i.data_type for i in graph.initializer}
    assert norm and not any(weights.get(i) == onnx.TensorProto.FLOAT16 for n in norm for i in n.input)
    assert sum(t == onnx.TensorProto.FLOAT16 for t in weights.values()) > 10
    within_bound("hubert", "fp16", runner(AUDIO), reference())
    path = stages.SYNTH.checkpoint(fixtures.cache_dir(), "tiny")
    synth = variants.apply(stages.SYNTH.load(get_backend("onnx"), path), "synth", "fp16")
    graph = _graph(synth.model).graph
    readers = [n for n in graph.node if "pitchf" in n.input]
    to_half = [n for n in readers if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16]
    assert readers and not to_half  # not rounded to float16 on the way in
    for name, level in (("ort-basic", "ORT_ENABLE_BASIC"), ("ort-none", "ORT_DISABLE_ALL")):
        runner = hubert("onnx", name)
        options = runner.model.session.get_session_options()
        assert str(options.graph_optimization_level).endswith(level)
        assert parity.tensor_metrics(runner(AUDIO), reference())["rel_l2"] < 1e-5


def test_mlx_compiled_computes_what_eager_computes():
    out = hubert("mlx", "compiled")(AUDIO)
    assert parity.tensor_metrics(out, hubert("mlx")(AUDIO))["rel_l2"] < 1e-6


def test_what_a_backend_cannot_run_is_refused_in_one_line():
    for name, stage, backend, says in [
        ("int8", "hubert", "mlx", "does not run on mlx"),
        ("compiled", "hubert", "onnx", "does not run on onnx"),
        ("ort-basic", "hubert", "torch", "does not run on torch"),
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


def test_infer_converts_with_each_backends_variants_and_refuses_the_rest(tmp_path, capsys):
    """`rvc-bench infer --dtype/--quantize/--compile` on every backend that has them (the output differs from the
    fp32 conversion, so the variant really ran); a combination a backend cannot run: one line, exit 2, no file."""
    import soundfile as sf
    from helpers import infer_synthetic

    voice = stages.SYNTH.checkpoint(fixtures.cache_dir(), "tiny")
    src = tmp_path / "in.wav"
    sf.write(src, fixtures.generate(0.5, seed=5).audio, 16000, subtype="FLOAT")
    runs = {  # (the tiny RMVPE has no Linear 64 wide: the pipeline's q8 quantises HuBERT and the synthesizer)
        "mlx": [(), ("--dtype", "float16"), ("--quantize", "8"), ("--compile",)],
        "torch": [(), ("--quantize", "8"), ("--channels-last",)],
        "onnx": [(), ("--dtype", "float16"), ("--quantize", "8")],
    }
    for backend, flag_sets in runs.items():
        outputs = []
        for i, flags in enumerate(flag_sets):
            out = tmp_path / f"{backend}-{i}.wav"
            assert infer_synthetic(voice, src, out, backend, *flags) == 0, (backend, flags, capsys.readouterr())
            outputs.append(sf.read(out, dtype="float32")[0])
        for flags, audio in zip(flag_sets[1:], outputs[1:]):
            if flags not in {("--compile",), ("--channels-last",)}:  # the same numbers, faster
                assert not np.array_equal(audio, outputs[0]), (backend, flags)
    capsys.readouterr()
    for backend, flags, says in [
        ("onnx", ("--compile",), "onnx cannot run compiled"),
        ("onnx", ("--dtype", "bfloat16"), "onnx cannot run bf16"),
        ("torch", ("--quantize", "4"), "8-bit only"),
        ("mlx", ("--channels-last",), "mlx cannot run channels-last"),
    ]:
        out = tmp_path / "refused.wav"
        assert infer_synthetic(voice, src, out, backend, *flags) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err and not out.exists()


def test_pipeline_variants_each_start_from_the_fp32_models(tmp_path):
    """The pipeline suite caches its fp32 models; a variant once changed them in place, so every later row ran
    with it too (a graph level after int8 measured int8's pitch). A graph level is held to the fp32 bounds."""
    import subprocess
    import sys

    from rvc_bench import store

    assert variants.check_of("v2-40k+ort-basic") == "benchmark" and variants.check_of("v2-40k+int8") == "variant-int8"
    options = ["--model-size", "tiny", "--lengths", "1", "--rounds", "1", "--warmup", "0", "--backends", "onnx"]
    argv = [sys.executable, "-m", "pytest", "-q", "suites/test_bench_pipeline.py", "--benchmark-only", *options]
    proc = subprocess.run(
        [*argv, "--variants", "int8,ort-basic", "--store", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = store.read(tmp_path).rows
    level = rows[(rows.variant == "v2-40k+ort-basic") & (rows.metric == "parity.snr_db")]
    assert len(level) == 1 and level.within_bound.iloc[0] and level.value.iloc[0] > 60
