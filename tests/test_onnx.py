"""ONNX Runtime backend: each stage exported from its torch twin (tiny models) runs within the parity bounds of
references/parity_tolerances.csv at 1 s and 5 s; the adapter's device choice; the export cache; and the contract
check that loads upstream-layout files and refuses a mismatched .onnx by name.

No upstream .onnx can be downloaded here, so the upstream-layout files are made from our exports by renaming their
tensors, dropping our metadata and (synthesizer) rewiring the inputs to upstream's (ds, rnd, no sine_noise).
Measured on AMD EPYC, 2 cores, onnxruntime 1.32 (CPU), torch 2.13, tiny models, against the torch twin: log-mel
(against float64 numpy) rel L2 1.7e-5; RMVPE network alone 2e-6, whole stage 4.2e-4 at 5 s (the log-mel twins'
near-floor bins, as for MLX); HuBERT rel L2 <= 6e-7; synthesizer >= 122 dB SNR.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rvc_bench import gate, measure, onnx_graph, parity
from rvc_bench.backends import BackendError
from rvc_bench.fixtures import cache_dir, generate
from rvc_bench.onnx_backend import ONNX_DEVICES, PROVIDERS, OnnxBackend, onnx_devices, physical_cores
from rvc_bench.onnx_graph import OnnxModelError

SECONDS = (1, 5)
# log-mel against float64 numpy, as suites/test_mel.py: float32 rounding near the 1e-5 floor is ~1e-3 after the log
# (bound 5e-3 there and here); energetic bins (>= 1e-2) show the FFT's float32 accuracy directly. ONNX Runtime's
# STFT kernel is less exact than torch's: measured max |d| on energetic bins 1.3e-5 / 3.4e-5 / 3.7e-5 at 1 / 5 / 30 s
# (torch: 4.5e-6 / 8.4e-6 / 1.0e-5; suite bound 2e-5), rel L2 1.7e-5 (torch 1.1e-5). Bound: ~3x the measured.
MEL_ATOL_ALL, MEL_ATOL_ENERGETIC, MEL_ENERGETIC = 5e-3, 1e-4, np.log(1e-2)
RMVPE_NET_MAX_ABS = 2e-5  # network alone, both fed torch's log-mel: the tiny twins' bound (suites/test_rmvpe.py)
CHUNK_MAX_ABS = 1e-4  # chunked vs whole-sequence inference (suites/test_rmvpe.py)
SYNTH_VARIANTS = ("v2-40k", "v1-32k-nono")


def assert_within_table(stage: str, metrics: dict) -> None:
    """Every bound the tolerance table sets for `stage` holds (the same table the gate enforces on stored runs)."""
    rows = gate.load_tolerances().query("stage == @stage")
    assert len(rows), f"no bounds for {stage}"
    for t in rows.itertuples():
        value = metrics[t.metric]
        assert (value <= t.bound) if t.direction == "max" else (value >= t.bound), f"{stage} {t.metric} = {value}"


# ---- exports (cached in the fixtures cache; made once per cache) --------------------------------------------------


@functools.lru_cache(maxsize=None)
def mel_path():
    from rvc_bench.mel import model_onnx

    return model_onnx.ensure()


@functools.lru_cache(maxsize=None)
def rmvpe_models():
    from rvc_bench.rmvpe import model_onnx, model_torch, synthetic

    ckpt = synthetic.ensure_checkpoint(cache_dir(), "tiny")
    return ckpt, model_onnx.ensure(ckpt, model_torch.load), model_torch.load(ckpt)


@functools.lru_cache(maxsize=None)
def hubert_models(version: str):
    from rvc_bench.hubert import model_onnx, model_torch, synthetic

    ckpt = synthetic.ensure_checkpoint(cache_dir(), "tiny")
    load = lambda p: model_torch.load_model(p, "tiny")  # noqa: E731
    return model_onnx.ensure(ckpt, load, version), load(ckpt)


@functools.lru_cache(maxsize=None)
def synth_models(name: str):
    from rvc_bench.synth import convert, model_onnx, synthetic

    ckpt = synthetic.ensure_checkpoint(cache_dir(), name, "tiny")
    return model_onnx.ensure(ckpt, convert.load_torch), convert.load_torch(ckpt)


def synth_inputs(cfg, seconds: float, seed: int = 1):
    from rvc_bench.synth import synthetic

    frames = int(seconds * 100)
    return synthetic.make_inputs(cfg, generate(frames / 100 + 0.02, seed=3).f0[:frames], seed=seed)


# ---- parity per stage ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", SECONDS)
def test_mel_export_matches_the_reference(seconds):
    from rvc_bench.mel import model_onnx, reference

    audio = generate(seconds, seed=0).audio
    mel, ref = model_onnx.MelSpectrogram(mel_path())(audio), reference.log_mel(audio)
    assert_within_table("mel", parity.tensor_metrics(mel, ref))
    energetic = ref >= MEL_ENERGETIC
    assert np.abs(mel - ref).max() <= MEL_ATOL_ALL and np.abs(mel - ref)[energetic].max() <= MEL_ATOL_ENERGETIC


@pytest.mark.parametrize("seconds", SECONDS)
def test_rmvpe_export_matches_the_torch_twin(seconds):
    from rvc_bench.rmvpe import model_onnx, model_torch

    _, path, twin = rmvpe_models()
    audio = generate(seconds, seed=0).audio
    salience, f0 = model_onnx.RMVPE(model_onnx.load(path))(audio)
    ref_salience, ref_f0 = model_torch.RMVPE(twin)(torch.from_numpy(audio))
    assert_within_table("rmvpe", {**parity.tensor_metrics(salience, ref_salience), **parity.pitch_metrics(f0, ref_f0)})
    with torch.inference_mode():  # the network alone, both fed torch's log-mel: the BiGRU export is exact
        mel = model_torch.MelSpectrogram()(torch.from_numpy(audio)[None])
        ref = twin.mel2hidden(mel).numpy()
    assert parity.tensor_metrics(model_onnx.load(path).mel2hidden(mel.numpy()), ref)["max_abs"] <= RMVPE_NET_MAX_ABS


def test_rmvpe_chunked_inference_matches_whole_sequence():
    from rvc_bench.rmvpe import model_onnx

    audio = generate(5, seed=0).audio
    model = model_onnx.load(rmvpe_models()[1])
    whole = model_onnx.RMVPE(model).salience(audio)
    chunked = model_onnx.RMVPE(model, chunk_frames=128).salience(audio)
    assert chunked.shape == whole.shape and np.abs(chunked - whole).max() <= CHUNK_MAX_ABS


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hubert_export_matches_the_torch_twin(version, seconds):
    from rvc_bench.hubert import model_onnx

    path, twin = hubert_models(version)
    audio = generate(seconds, seed=3).audio[None]
    feats = model_onnx.load(path).features(audio, version)
    assert_within_table("hubert", parity.tensor_metrics(feats, twin.features(torch.from_numpy(audio), version)))


def test_hubert_windows_match_the_torch_twin():
    from rvc_bench.hubert import model_onnx

    path, twin = hubert_models("v2")
    audio = generate(1, seed=3).audio[None]
    windowed = model_onnx.load(path).features_windowed(audio, "v2", max_seconds=0.4)  # 3 windows
    ref = twin.features_windowed(torch.from_numpy(audio), "v2", max_seconds=0.4)
    assert_within_table("hubert", parity.tensor_metrics(windowed, ref))


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("name", SYNTH_VARIANTS)
def test_synth_export_matches_the_torch_twin(name, seconds):
    from rvc_bench.synth import model_onnx, model_torch

    path, twin = synth_models(name)
    inputs = synth_inputs(twin.cfg, seconds)
    audio = model_onnx.run(model_onnx.load(path), inputs)["audio"]
    assert_within_table("synth", parity.tensor_metrics(audio, model_torch.run(twin, inputs)["audio"]))


def test_runners_refuse_what_their_graph_cannot_compute():
    from rvc_bench.hubert import model_onnx as hubert_onnx
    from rvc_bench.synth import model_onnx as synth_onnx

    with pytest.raises(ValueError, match="computes v1 features, not v2"):
        hubert_onnx.load(hubert_models("v1")[0]).features(np.zeros((1, 16000), np.float32), "v2")
    path, twin = synth_models("v2-40k")
    inputs = synth_inputs(twin.cfg, 0.1)
    with pytest.raises(ValueError, match="at least 12 frames, got 10"):
        synth_onnx.run(synth_onnx.load(path), inputs)


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
    backend = OnnxBackend("cpu")
    backend.device, backend.provider = "cuda", PROVIDERS["cuda"]  # as if the build listed CUDA but could not start it
    if "cuda" in onnx_devices():
        pytest.skip("CUDA starts here")
    with pytest.raises(BackendError, match="could not start CUDAExecutionProvider .* has CPUExecutionProvider"):
        backend.session(mel_path())


def test_device_choice_options_and_description():
    backend = OnnxBackend()
    assert backend.device == onnx_devices()[0] == next(d for d in ONNX_DEVICES if d in onnx_devices())
    d = OnnxBackend("cpu").describe()
    assert d["device"] == "cpu" and d["device_name"] and d["onnxruntime_version"]
    assert d["onnx_providers"] == "CPUExecutionProvider" and d["onnx_graph_optimization"] == "ORT_ENABLE_ALL"
    assert d["onnx_intra_op_threads"] == physical_cores()
    placement = backend.placement(backend.session(mel_path()))
    assert list(placement) == [backend.provider] and placement[backend.provider] > 0
    options = backend.session_options()
    assert options.intra_op_num_threads == physical_cores()
    assert str(options.graph_optimization_level).endswith("ORT_ENABLE_ALL")


def test_measuring_path_runs_onnx_with_rss_and_no_framework_counter():
    from rvc_bench.mel import model_onnx

    backend = OnnxBackend("cpu")
    mel = model_onnx.MelSpectrogram(mel_path(), backend)
    audio = backend.from_numpy(generate(1, seed=0).audio)
    m = measure.cold_call(backend, mel, (audio,))
    assert isinstance(m.output, np.ndarray) and m.output.shape == (128, 101)  # host arrays: nothing left to wait for
    assert np.isnan(m.mem_framework_peak) and m.rss_peak_delta >= 0 and m.cold_s > 0
    assert np.array_equal(backend.to_numpy(m.output), m.output)


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
    assert calls[0]["source_sha256"] == onnx_graph.file_sha256(ckpt)
    ckpt.write_bytes(b"weights two")  # a changed checkpoint re-exports under a new key
    assert onnx_graph.cached_export(tmp_path, "synth", "voice", ckpt, fake_export) != first and len(calls) == 2


def test_exports_record_source_opset_and_exporter():
    ckpt, path, _ = rmvpe_models()
    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    assert meta["rvc_bench.stage"] == "rmvpe" and meta["rvc_bench.opset"] == str(onnx_graph.OPSET)
    assert meta["rvc_bench.source_sha256"] == onnx_graph.file_sha256(ckpt)
    assert meta["rvc_bench.torch"] == torch.__version__ and meta["rvc_bench.onnxscript"]


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
    ours = rmvpe_onnx.load(path)
    theirs = rmvpe_onnx.E2E(upstream, cfg=preset("tiny"))
    assert theirs.meta == {} and np.array_equal(theirs.mel2hidden(mel), ours.mel2hidden(mel))

    for version in ("v1", "v2"):
        path = hubert_models(version)[0]
        vec = tmp_path / f"vec-{version}.onnx"
        onnx.save(_rename(onnx.load(path), {"source": "feats", "features": "logits"}), vec)
        audio = generate(1, seed=3).audio[None]
        theirs = hubert_onnx.load(vec, cfg="tiny")
        assert theirs.version == version  # read from the feature width
        assert np.array_equal(theirs.features(audio, version), hubert_onnx.load(path).features(audio, version))


def _as_upstream_synth(model: onnx.ModelProto, upp: int) -> onnx.ModelProto:
    """Our pitch-voice export rewired to upstream's inputs: ds for sid, rnd = 0.66666 eps, no sine_noise (here
    zeros made in the graph, where upstream draws noise, so that the result can be compared exactly)."""
    from rvc_bench.synth.config import PRIOR_NOISE_SCALE

    g = model.graph
    const = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))  # noqa
    nodes = [helper.make_node("Identity", ["ds"], ["sid"]),
             const("noise_scale", np.array(PRIOR_NOISE_SCALE, np.float32)),
             helper.make_node("Div", ["rnd", "noise_scale"], ["eps"]),
             helper.make_node("Shape", ["pitchf"], ["frames_shape"]),
             const("upp", np.array([1, upp], np.int64)),
             helper.make_node("Mul", ["frames_shape", "upp"], ["noise_shape"]),
             helper.make_node("ConstantOfShape", ["noise_shape"], ["sine_noise"],
                              value=numpy_helper.from_array(np.zeros(1, np.float32)))]
    for node in reversed(nodes):
        g.node.insert(0, node)
    for value in g.input:
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
        model_onnx.load(upstream)
    model = model_onnx.load(upstream, cfg=twin.cfg)
    assert model.layout == "upstream" and not model.injects_sine_noise
    inputs = synth_inputs(twin.cfg, 1)
    audio = model_onnx.run(model, inputs)["audio"]
    silent = inputs.__class__(**{**inputs.__dict__, "sine_noise": np.zeros_like(inputs.sine_noise)})
    assert_within_table("synth", parity.tensor_metrics(audio, model_torch.run(twin, silent)["audio"]))
    with pytest.raises(ValueError, match="draws its NSF noise inside the graph"):
        model.infer(inputs.phone[None], [inputs.frames], inputs.pitch[None], inputs.pitchf[None],
                    sine_noise=inputs.sine_noise[None])


# ---- mismatched files are refused by name -------------------------------------------------------------------------

_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def fake_onnx(path, inputs, outputs):
    """A loadable graph with the given (name, dtype, dims) inputs and outputs (each output a reshaped range whose
    length depends on the first input, so that ONNX Runtime reports the declared output shapes)."""
    const = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))  # noqa
    nodes = [helper.make_node("Size", [inputs[0][0]], ["n"]), const("zero", np.array(0, np.int64)),
             const("one", np.array(1, np.int64)), helper.make_node("Range", ["zero", "n", "one"], ["range"]),
             helper.make_node("Cast", ["range"], ["values"], to=TensorProto.FLOAT)]
    for name, _, dims in outputs:
        nodes += [const(f"{name}_shape", np.array([d if isinstance(d, int) else -1 for d in dims], np.int64)),
                  helper.make_node("Reshape", ["values", f"{name}_shape"], [name])]
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

    salience = [("out", "float32", [1, "t", 360])]
    msg = refusal(rmvpe_onnx.load, fake_onnx(tmp_path / "a.onnx", [("x", "float32", [1, 80, "t"])], salience))
    assert "input 'x' axis 1 is 80, the runner needs mel float32[1, 128, frames]" in msg
    msg = refusal(rmvpe_onnx.load, fake_onnx(tmp_path / "b.onnx", [("x", "float32", [1, 128, 64])], salience))
    assert "axis 2 is fixed at 64, the runner needs it dynamic (frames)" in msg
    msg = refusal(rmvpe_onnx.load, fake_onnx(tmp_path / "c.onnx", [("x", "float32", [1, 128, "t"]),
                                                                  ("y", "float32", [1])], salience))
    assert "2 inputs ('x', 'y'), the runner needs 1" in msg
    msg = refusal(hubert_onnx.load, fake_onnx(tmp_path / "d.onnx", [("wav", "float32", [1, 1, "n"])],
                                              [("feats", "float32", [1, "t", 512])]))
    assert "cannot tell the RVC version" in msg
    msg = refusal(rmvpe_onnx.load, hubert_models("v2")[0])
    assert "an rvc-bench export of stage 'hubert', not 'rmvpe'" in msg

    cfg = synth_models("v2-40k")[1].cfg
    upstream = [("phone", "float32", [1, "t", cfg.phone_channels]), ("phone_lengths", "int64", [1]),
                ("pitch", "int64", [1, "t"]), ("pitchf", "float32", [1, "t"]), ("ds", "int64", [1]),
                ("rnd", "float32", [1, cfg.inter_channels, "t"])]
    audio = [("audio", "float32", [1, 1, "n"])]
    load = lambda p: synth_onnx.load(p, cfg=cfg)  # noqa: E731
    fake_onnx(tmp_path / "ok.onnx", upstream, audio)
    assert synth_onnx.load(tmp_path / "ok.onnx", cfg=cfg).layout == "upstream"
    msg = refusal(load, fake_onnx(tmp_path / "e.onnx", upstream[:4] + upstream[5:], audio))
    assert "no input 'ds'" in msg
    float_pitch = upstream[:2] + [("pitch", "float32", [1, "t"])] + upstream[3:]
    msg = refusal(load, fake_onnx(tmp_path / "f.onnx", float_pitch, audio))
    assert "input 'pitch' is float32, the runner needs pitch int64[1, frames]" in msg
    v1_phone = [("phone", "float32", [1, "t", 256])] + upstream[1:]
    assert "input 'phone' axis 2 is 256" in refusal(load, fake_onnx(tmp_path / "g.onnx", v1_phone, audio))

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert "not a loadable ONNX model" in refusal(rmvpe_onnx.load, tmp_path / "junk.onnx")
    assert "ONNX model not found" in refusal(rmvpe_onnx.load, tmp_path / "missing.onnx")
