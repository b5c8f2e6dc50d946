"""ONNX Runtime backend: each stage exported from its torch twin (tiny models) runs within the parity bounds of
references/parity_tolerances.csv at 1 s and 5 s; the adapter's device choice; the export cache, and the child
process that exports for a process that must not import torch; and the contract check that loads upstream-layout
files and refuses a mismatched .onnx by name.

The exports are made once per fixture cache, in this process (`ensure`), with the same keys the benchmark suites use,
so the suites and these tests share them.

No upstream .onnx can be downloaded here, so the upstream-layout files are made from our exports by renaming their
tensors, dropping our metadata and (synthesizer) rewiring the inputs to upstream's (ds, rnd, no sine_noise).
Measured on AMD EPYC, 2 cores, onnxruntime 1.32 (CPU), torch 2.13, tiny models, against the torch twin: log-mel
(against float64 numpy) rel L2 1.7e-5; RMVPE network alone 2e-6, whole stage 4.2e-4 at 5 s (the log-mel twins'
near-floor bins, as for MLX); HuBERT rel L2 <= 6e-7; synthesizer >= 122 dB SNR.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import onnx
import psutil
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rvc_bench import measure, onnx_graph, parity, stages, tolerances
from rvc_bench.backends import ONNX_DEVICES, BackendError, OnnxBackend
from rvc_bench.fixtures import cache_dir, generate
from rvc_bench.layout import CheckpointError
from rvc_bench.machine import ONNX_PROVIDERS, onnx_devices
from rvc_bench.onnx_graph import OnnxModelError

SECONDS = (1, 5)
# log-mel against float64 numpy, as suites/test_mel.py: float32 rounding near the 1e-5 floor is ~1e-3 after the log
# (the table's "twin" max_abs); energetic bins (>= 1e-2) show the FFT's float32 accuracy directly, where ONNX
# Runtime's STFT kernel is less exact than torch's (the table's onnx row; measured 1.3e-5 / 3.4e-5 at 1 / 5 s).
MEL_ENERGETIC = np.log(1e-2)
SYNTH_VARIANTS = ("v2-40k", "v1-32k-nono")


def within_table(stage: str, metrics: dict, check: str = tolerances.BENCHMARK, only=None) -> None:
    """The bounds the table sets for `stage` on ONNX Runtime hold (the same table the bench fixture and the gate
    apply to stored runs)."""
    tolerances.assert_within(stage, check, metrics, only, backend="onnx")


@functools.lru_cache(maxsize=None)
def backend() -> OnnxBackend:
    return OnnxBackend("cpu")


# ---- exports (cached in the fixtures cache; made once per cache) --------------------------------------------------


@functools.lru_cache(maxsize=None)
def mel_path():
    from rvc_bench.mel import model_onnx

    return model_onnx.ensure(None, cache_dir())


@functools.lru_cache(maxsize=None)
def rmvpe_models():
    """(checkpoint, export, torch RMVPE stage) of the tiny preset."""
    ckpt = stages.RMVPE.checkpoint(cache_dir(), "tiny")
    mel_path()  # the runner's log-mel
    return ckpt, stages.RMVPE.onnx.ensure(ckpt, cache_dir()), stages.RMVPE.convert.load_torch(ckpt)


@functools.lru_cache(maxsize=None)
def hubert_models(version: str):
    """(export of `version`, torch HubertModel) of the tiny preset."""
    ckpt = stages.HUBERT.checkpoint(cache_dir(), "tiny")
    return (
        stages.HUBERT.onnx.ensure(ckpt, cache_dir(), "tiny", version),
        stages.HUBERT.convert.load_torch(ckpt, config="tiny"),
    )


@functools.lru_cache(maxsize=None)
def synth_models(name: str):
    """(export, torch Synthesizer) of the tiny voice `name`."""
    from rvc_bench.synth import synthetic

    ckpt = synthetic.ensure_checkpoint(cache_dir(), "tiny", variant=name)
    return stages.SYNTH.onnx.ensure(ckpt, cache_dir()), stages.SYNTH.convert.load_torch(ckpt)


def synth_inputs(cfg, seconds: float, seed: int = 1):
    from rvc_bench.synth import synthetic

    frames = int(seconds * 100)
    return synthetic.make_inputs(cfg, generate(frames / 100 + 0.02, seed=3).f0[:frames], seed=seed)


# ---- parity per stage ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", SECONDS)
def test_mel_export_matches_the_reference(seconds):
    from rvc_bench.mel import model_onnx, reference

    audio = generate(seconds, seed=0).audio
    mel, ref = model_onnx.MelSpectrogram(mel_path(), backend())(audio), reference.log_mel(audio)
    energetic = {"max_abs_energetic": float(np.abs(mel - ref)[ref > MEL_ENERGETIC].max())}
    within_table("mel", {**parity.tensor_metrics(mel, ref), **energetic})
    within_table("mel", parity.tensor_metrics(mel, ref), check="twin", only=("max_abs",))


@pytest.mark.parametrize("seconds", SECONDS)
def test_rmvpe_export_matches_the_torch_twin(seconds):
    from rvc_bench.rmvpe import model_onnx, model_torch

    _, path, twin = rmvpe_models()
    audio = generate(seconds, seed=0).audio
    salience, f0 = model_onnx.load(path, backend())(audio)
    ref_salience, ref_f0 = twin(torch.from_numpy(audio))
    within_table("rmvpe", {**parity.tensor_metrics(salience, ref_salience), **parity.pitch_metrics(f0, ref_f0)})
    with torch.inference_mode():  # the network alone, both fed torch's log-mel: the BiGRU export is exact
        mel = model_torch.MelSpectrogram()(torch.from_numpy(audio)[None])
        ref = twin.model.mel2hidden(mel).numpy()
    network = model_onnx.E2E(path, backend()).mel2hidden(mel.numpy())
    within_table("rmvpe", parity.tensor_metrics(network, ref), check="network-tiny")


def test_rmvpe_chunked_inference_matches_whole_sequence():
    """The U-Net's graph in chunks, the BiGRU's over the whole sequence, on the long-memory weights (tiny, 10 s,
    chunk 128 + 2 x 64 context): the twins' exact chunking. The BiGRU cut per chunk (the old default) shows."""
    from rvc_bench.rmvpe import model_onnx, synthetic

    audio = generate(10, seed=0).audio
    # Exported by a child process: torch's exporter cannot trace the BiGRU again in a process that exported it alone.
    path = model_onnx.exported(synthetic.ensure_checkpoint(cache_dir(), "tiny", kind="long-memory"), cache_dir())
    whole = model_onnx.load(path, backend()).salience(audio)
    chunked = model_onnx.load(path, backend(), chunk_frames=128).salience(audio)
    assert chunked.shape == whole.shape
    within_table("rmvpe", parity.tensor_metrics(chunked, whole), check="chunked")
    cut = model_onnx.load(path, backend(), chunk_frames=128, cut_gru=True).salience(audio)
    assert np.abs(cut - whole).max() > 1000 * tolerances.bound("rmvpe", "chunked", "max_abs")


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hubert_export_matches_the_torch_twin(version, seconds):
    from rvc_bench.hubert import model_onnx

    path, twin = hubert_models(version)
    audio = generate(seconds, seed=3).audio[None]
    feats = model_onnx.load(path, backend()).features(audio, version)
    within_table("hubert", parity.tensor_metrics(feats, twin.features(torch.from_numpy(audio), version)))


def test_hubert_windows_match_the_torch_twin():
    from rvc_bench.hubert import model_onnx

    path, twin = hubert_models("v2")
    audio = generate(1, seed=3).audio[None]
    windowed = model_onnx.load(path, backend()).features_windowed(audio, "v2", max_seconds=0.4)  # 3 windows
    ref = twin.features_windowed(torch.from_numpy(audio), "v2", max_seconds=0.4)
    within_table("hubert", parity.tensor_metrics(windowed, ref))


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("name", SYNTH_VARIANTS)
def test_synth_export_matches_the_torch_twin(name, seconds):
    from rvc_bench.synth import model_onnx, model_torch

    path, twin = synth_models(name)
    inputs = synth_inputs(twin.cfg, seconds)
    audio = model_onnx.run(model_onnx.load(path, backend()), inputs)["audio"]
    within_table("synth", parity.tensor_metrics(audio, model_torch.run(twin, inputs)["audio"]))


def test_runners_refuse_what_their_graph_cannot_compute():
    from rvc_bench.hubert import model_onnx as hubert_onnx
    from rvc_bench.synth import model_onnx as synth_onnx

    v1 = hubert_models("v1")[0]
    with pytest.raises(ValueError, match="computes v1 features, not v2"):
        hubert_onnx.load(v1, backend()).features(np.zeros((1, 16000), np.float32), "v2")
    with pytest.raises(OnnxModelError, match="the graph computes v1 features, not v2"):
        hubert_onnx.load(v1, backend(), version="v2")
    path, twin = synth_models("v2-40k")
    inputs = synth_inputs(twin.cfg, 0.1)
    with pytest.raises(ValueError, match="at least 12 frames, got 10"):
        synth_onnx.run(synth_onnx.load(path, backend()), inputs)


# ---- the adapter --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "coreml"])
def test_unavailable_provider_is_a_clear_error(device):
    if device in onnx_devices():
        pytest.skip(f"onnx:{device} exists on this machine")
    with pytest.raises(BackendError, match=f"onnx device {device!r} is not available here: .+"):
        OnnxBackend(device)
    with pytest.raises(BackendError, match="unknown onnx device 'tpu'"):
        OnnxBackend("tpu")


def test_a_provider_that_fails_to_start_is_an_error_not_a_cpu_run():
    be = OnnxBackend("cpu")
    be.device, be.provider = "cuda", ONNX_PROVIDERS["cuda"]  # as if the build listed CUDA but could not start it
    if "cuda" in onnx_devices():
        pytest.skip("CUDA starts here")
    with pytest.raises(BackendError, match="could not start CUDAExecutionProvider .* has CPUExecutionProvider"):
        be.session(mel_path())


def test_device_choice_options_and_description():
    be = OnnxBackend()
    assert be.device == onnx_devices()[0] == next(d for d in ONNX_DEVICES if d in onnx_devices())
    d = OnnxBackend("cpu").describe()
    assert d["device"] == "cpu" and d["device_name"] and d["onnx_version"]
    assert d["onnx_providers"] == "CPUExecutionProvider" and d["onnx_graph_optimization"] == "ORT_ENABLE_ALL"
    assert d["onnx_intra_op_threads"] == psutil.cpu_count(logical=False)
    placement = be.placement(be.session(mel_path()))
    assert list(placement) == [be.provider] and placement[be.provider] > 0
    options = be.session_options()
    assert options.intra_op_num_threads == psutil.cpu_count(logical=False)
    assert str(options.graph_optimization_level).endswith("ORT_ENABLE_ALL")


def test_measuring_path_runs_onnx_with_rss_and_no_framework_counter():
    from rvc_bench.mel import model_onnx

    be = backend()
    mel = model_onnx.MelSpectrogram(mel_path(), be)
    audio = be.from_numpy(generate(1, seed=0).audio)
    m = measure.cold_call(be, mel, (audio,))
    assert isinstance(m.output, np.ndarray) and m.output.shape == (128, 101)  # host arrays: nothing left to wait for
    assert np.isnan(m.mem_framework_peak) and m.rss_peak_delta >= 0 and m.cold_s > 0
    assert np.array_equal(be.to_numpy(m.output), m.output)


# ---- the export cache ---------------------------------------------------------------------------------------------


def test_export_cache_is_keyed_by_the_source_checkpoint(tmp_path):
    ckpt = tmp_path / "voice.pth"
    ckpt.write_bytes(b"weights one")
    calls = []

    def fake_export(path, meta):
        calls.append(meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"graph")

    first = onnx_graph.cached_export(tmp_path, "synth", "voice", ckpt, fake_export)
    assert onnx_graph.cached_export(tmp_path, "synth", "voice", ckpt, fake_export) == first and len(calls) == 1
    assert calls[0]["source_sha256"] == onnx_graph.source_sha256(ckpt)
    assert onnx_graph.export_path(tmp_path, "synth", "voice", ckpt) == first  # found without exporting
    ckpt.write_bytes(b"weights two")  # a changed checkpoint re-exports under a new key
    assert onnx_graph.cached_export(tmp_path, "synth", "voice", ckpt, fake_export) != first and len(calls) == 2


def test_exports_record_source_opset_and_exporter():
    ckpt, path, _ = rmvpe_models()
    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    assert meta["rvc_bench.stage"] == "rmvpe" and meta["rvc_bench.opset"] == str(onnx_graph.OPSET)
    assert meta["rvc_bench.source_sha256"] == onnx_graph.source_sha256(ckpt)
    assert meta["rvc_bench.torch"] == torch.__version__ and meta["rvc_bench.onnxscript"]


def test_a_missing_export_is_made_in_a_child_process_and_never_imports_torch_here(tmp_path):
    """What a benchmark process measuring ONNX Runtime relies on: loading through the registry from a cold cache
    exports in a child process (torch is imported there, not here)."""
    code = (
        "import sys; from rvc_bench.backends import get_backend; from rvc_bench.mel import model_onnx\n"
        f"mel = model_onnx.load(get_backend('onnx', 'cpu'), {str(tmp_path)!r})\n"
        "assert mel(__import__('numpy').zeros(16000, 'float32')).shape == (128, 101)\n"
        "print(sorted(m for m in ('torch', 'mlx', 'onnxruntime') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "['onnxruntime']"
    assert "exporting mel-log-mel-128-" in proc.stderr and len(list((tmp_path / "onnx").glob("*.onnx"))) == 1


def test_a_bad_checkpoint_fails_its_child_export_with_one_line(tmp_path):
    bad = tmp_path / "rmvpe.pt"
    torch.save({"something": torch.ones(1)}, bad)
    with pytest.raises(CheckpointError) as err:
        stages.RMVPE.checkpoint_for("onnx", bad, tmp_path)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert not (tmp_path / "onnx").exists() or not list((tmp_path / "onnx").glob("*.onnx"))


# ---- upstream-layout files ----------------------------------------------------------------------------------------


def _rename(model: onnx.ModelProto, names: dict) -> onnx.ModelProto:
    """Rename tensors everywhere and drop our metadata: a file as another exporter would have named it."""
    for node in model.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for value in [*model.graph.input, *model.graph.output]:
        value.name = names.get(value.name, value.name)
    del model.metadata_props[:]
    return model


def test_upstream_layout_rmvpe_and_contentvec_load_by_position(tmp_path):
    from rvc_bench.hubert import model_onnx as hubert_onnx
    from rvc_bench.rmvpe import model_onnx as rmvpe_onnx
    from rvc_bench.rmvpe.config import preset

    _, path, _ = rmvpe_models()
    upstream = tmp_path / "rmvpe.onnx"
    onnx.save(_rename(onnx.load(path), {"mel": "input", "salience": "output"}), upstream)
    mel = np.random.default_rng(0).standard_normal((1, 128, 96)).astype(np.float32) - 4
    ours = rmvpe_onnx.E2E(path, backend())
    theirs = rmvpe_onnx.E2E(upstream, backend(), cfg=preset("tiny"))
    assert theirs.meta == {} and np.array_equal(theirs.mel2hidden(mel), ours.mel2hidden(mel))
    # One graph: the U-Net cannot run in chunks apart from the BiGRU; cutting the BiGRU per chunk is still possible.
    with pytest.raises(onnx_graph.OnnxModelError, match="this file is one graph: run it whole"):
        theirs.mel2hidden(mel, chunk_frames=32)
    assert theirs.mel2hidden(mel, chunk_frames=32, cut_gru=True).shape == (1, 96, 360)

    for version in ("v1", "v2"):
        path = hubert_models(version)[0]
        vec = tmp_path / f"vec-{version}.onnx"
        onnx.save(_rename(onnx.load(path), {"source": "feats", "features": "logits"}), vec)
        audio = generate(1, seed=3).audio[None]
        theirs = hubert_onnx.load(vec, backend(), config="tiny")
        assert theirs.version == version  # read from the feature width
        assert np.array_equal(
            theirs.features(audio, version), hubert_onnx.load(path, backend()).features(audio, version)
        )


def _as_upstream_synth(model: onnx.ModelProto, upp: int) -> onnx.ModelProto:
    """Our pitch-voice export rewired to upstream's inputs: ds for sid, rnd = 0.66666 eps (channels first), no
    sine_noise (here zeros made in the graph, where upstream draws noise, so that the result can be compared
    exactly)."""
    from rvc_bench.synth.config import PRIOR_NOISE_SCALE

    g = model.graph
    const = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))  # noqa
    nodes = [
        helper.make_node("Identity", ["ds"], ["sid"]),
        const("noise_scale", np.array(PRIOR_NOISE_SCALE, np.float32)),
        helper.make_node("Div", ["rnd", "noise_scale"], ["eps_first"]),
        helper.make_node("Transpose", ["eps_first"], ["eps"], perm=[0, 2, 1]),
        helper.make_node("Shape", ["pitchf"], ["frames_shape"]),
        const("upp", np.array([1, upp], np.int64)),
        helper.make_node("Mul", ["frames_shape", "upp"], ["noise_shape"]),
        helper.make_node(
            "ConstantOfShape", ["noise_shape"], ["sine_noise"], value=numpy_helper.from_array(np.zeros(1, np.float32))
        ),
    ]
    for node in reversed(nodes):
        g.node.insert(0, node)
    for value in g.input:
        if value.name == "eps":  # [1, frames, inter] -> upstream's [1, inter, frames]
            dims = value.type.tensor_type.shape.dim
            frames, inter = dims[1].dim_param, dims[2].dim_value
            dims[1].Clear(), dims[2].Clear()
            dims[1].dim_value, dims[2].dim_param = inter, frames
        value.name = {"sid": "ds", "eps": "rnd"}.get(value.name, value.name)
    g.input.remove(next(v for v in g.input if v.name == "sine_noise"))
    del model.metadata_props[:]
    return model


def test_upstream_layout_synthesizer_maps_ds_and_rnd(tmp_path):
    from rvc_bench.synth import model_onnx, model_torch

    path, twin = synth_models("v2-40k")
    upstream = tmp_path / "voice.onnx"
    onnx.save(_as_upstream_synth(onnx.load(path), twin.cfg.upp), upstream)
    with pytest.raises(OnnxModelError, match="carries no synthesizer config"):
        model_onnx.load(upstream, backend())
    model = model_onnx.load(upstream, backend(), cfg=twin.cfg)
    assert model.layout == "upstream" and not model.injects_sine_noise
    inputs = synth_inputs(twin.cfg, 1)
    audio = model_onnx.run(model, inputs)["audio"]
    silent = inputs.__class__(**{**inputs.__dict__, "sine_noise": np.zeros_like(inputs.sine_noise)})
    within_table("synth", parity.tensor_metrics(audio, model_torch.run(twin, silent)["audio"]))
    with pytest.raises(ValueError, match="draws its NSF noise inside the graph"):
        model.infer(
            inputs.phone[None],
            [inputs.frames],
            inputs.pitch[None],
            inputs.pitchf[None],
            sine_noise=inputs.sine_noise[None],
        )


# ---- mismatched files are refused by name -------------------------------------------------------------------------

_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def fake_onnx(path, inputs, outputs):
    """A loadable graph with the given (name, dtype, dims) inputs and outputs (each output a reshaped range whose
    length depends on the first input, so that ONNX Runtime reports the declared output shapes)."""
    const = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))  # noqa
    nodes = [
        helper.make_node("Size", [inputs[0][0]], ["n"]),
        const("zero", np.array(0, np.int64)),
        const("one", np.array(1, np.int64)),
        helper.make_node("Range", ["zero", "n", "one"], ["range"]),
        helper.make_node("Cast", ["range"], ["values"], to=TensorProto.FLOAT),
    ]
    for name, _, dims in outputs:
        nodes += [
            const(f"{name}_shape", np.array([d if isinstance(d, int) else -1 for d in dims], np.int64)),
            helper.make_node("Reshape", ["values", f"{name}_shape"], [name]),
        ]
    info = lambda name, dtype, dims: helper.make_tensor_value_info(name, _TYPES[dtype], dims)  # noqa: E731
    graph = helper.make_graph(nodes, "fake", [info(*i) for i in inputs], [info(*o) for o in outputs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    return path


def refusal(load, path) -> str:
    with pytest.raises(OnnxModelError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_mismatched_files_are_refused_naming_the_mismatch(tmp_path):
    from rvc_bench.hubert import model_onnx as hubert_onnx
    from rvc_bench.rmvpe import model_onnx as rmvpe_onnx
    from rvc_bench.synth import model_onnx as synth_onnx

    rmvpe_e2e = lambda p: rmvpe_onnx.E2E(p, backend())  # noqa: E731
    hubert_load = lambda p: hubert_onnx.load(p, backend())  # noqa: E731
    salience = [("out", "float32", [1, "t", 360])]
    msg = refusal(rmvpe_e2e, fake_onnx(tmp_path / "a.onnx", [("x", "float32", [1, 80, "t"])], salience))
    assert "input 'x' axis 1 is 80, the runner needs mel float32[1, 128, frames]" in msg
    msg = refusal(rmvpe_e2e, fake_onnx(tmp_path / "b.onnx", [("x", "float32", [1, 128, 64])], salience))
    assert "axis 2 is fixed at 64, the runner needs it dynamic (frames)" in msg
    msg = refusal(
        rmvpe_e2e, fake_onnx(tmp_path / "c.onnx", [("x", "float32", [1, 128, "t"]), ("y", "float32", [1])], salience)
    )
    assert "2 inputs ('x', 'y'), the runner needs 1" in msg
    msg = refusal(
        hubert_load,
        fake_onnx(tmp_path / "d.onnx", [("wav", "float32", [1, 1, "n"])], [("feats", "float32", [1, "t", 512])]),
    )
    assert "cannot tell the RVC version" in msg
    msg = refusal(rmvpe_e2e, hubert_models("v2")[0])
    assert "an rvc-bench export of stage 'hubert', not 'rmvpe'" in msg

    cfg = synth_models("v2-40k")[1].cfg
    upstream = [
        ("phone", "float32", [1, "t", cfg.phone_channels]),
        ("phone_lengths", "int64", [1]),
        ("pitch", "int64", [1, "t"]),
        ("pitchf", "float32", [1, "t"]),
        ("ds", "int64", [1]),
        ("rnd", "float32", [1, cfg.inter_channels, "t"]),
    ]
    audio = [("audio", "float32", [1, 1, "n"])]
    load = lambda p: synth_onnx.load(p, backend(), cfg=cfg)  # noqa: E731
    fake_onnx(tmp_path / "ok.onnx", upstream, audio)
    assert load(tmp_path / "ok.onnx").layout == "upstream"
    msg = refusal(load, fake_onnx(tmp_path / "e.onnx", upstream[:4] + upstream[5:], audio))
    assert "no input 'ds'" in msg
    float_pitch = upstream[:2] + [("pitch", "float32", [1, "t"])] + upstream[3:]
    msg = refusal(load, fake_onnx(tmp_path / "f.onnx", float_pitch, audio))
    assert "input 'pitch' is float32, the runner needs pitch int64[1, frames]" in msg
    v1_phone = [("phone", "float32", [1, "t", 256])] + upstream[1:]
    assert "input 'phone' axis 2 is 256" in refusal(load, fake_onnx(tmp_path / "g.onnx", v1_phone, audio))

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert "not a loadable ONNX model" in refusal(rmvpe_e2e, tmp_path / "junk.onnx")
    assert "ONNX model not found" in refusal(rmvpe_e2e, tmp_path / "missing.onnx")


# ---- end to end through the CLI -----------------------------------------------------------------------------------


def test_run_with_onnx_stores_rows_held_to_the_table_and_reports_them(tmp_path):
    """`rvc-bench run --backends torch,onnx` (tiny models): one process per backend, ONNX Runtime's rows in the same
    store with parity against torch within the table, and the report's tables naming onnx:cpu."""
    from rvc_bench import results, store

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rvc_bench.cli",
            "run",
            "--stages",
            "mel,rmvpe",
            "--lengths",
            "0.5",
            "--rounds",
            "3",
            "--model-size",
            "tiny",
            "--backends",
            "torch,onnx",
            "--store",
            str(tmp_path / "store"),
            "--report",
            str(tmp_path / "B.md"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = store.read(tmp_path / "store").rows
    onnx_rows = rows[rows.backend == "onnx"]
    assert set(onnx_rows.device) == {"cpu"} and set(onnx_rows.stage) == {"mel", "rmvpe"}
    par = results.parity(rows)
    held = par[(par.backend == "onnx") & par.within_bound.notna()]
    assert set(held.stage) == {"mel", "rmvpe"} and held.within_bound.astype(bool).all(), held.to_string()
    main = onnx_rows[onnx_rows.variant.isin(["log-mel-128", "e2e"])]  # RMVPE's chunking variants aside
    assert (main.metric == "time_warm").sum() == 2 * 3  # two benchmarks, three rounds each
    assert "onnx:cpu" in (tmp_path / "B.md").read_text()


def test_infer_with_onnx_matches_torch(tmp_path, capsys):
    """`rvc-bench infer --backend onnx` on tiny synthetic models: the same conversion as torch's within the
    end-to-end parity tests' waveform SNR bound."""
    import soundfile as sf

    from rvc_bench import cli, fixtures

    voice = stages.SYNTH.checkpoint(cache_dir(), "tiny")
    src = tmp_path / "in.wav"
    sf.write(src, fixtures.generate(1.0, seed=5).audio, 16000, subtype="FLOAT")
    out = {}
    for name in ("torch", "onnx"):
        path = tmp_path / f"{name}.wav"
        assert (
            cli.main(
                [
                    "infer",
                    str(voice),
                    str(src),
                    "-o",
                    str(path),
                    "--seed",
                    "1",
                    "--model-size",
                    "tiny",
                    "--synthetic-models",
                    "--backend",
                    name,
                ]
            )
            == 0
        )
        out[name] = sf.read(path, dtype="float32")[0]
    assert "on onnx:cpu (onnxruntime " in capsys.readouterr().out
    assert out["onnx"].shape == out["torch"].shape and np.any(out["torch"])
    within_table(
        "pipeline",
        {"snr_db": parity.tensor_metrics(out["onnx"], out["torch"])["snr_db"]},
        check="e2e",
        only=("snr_db",),
    )
