"""ONNX Runtime backend: each stage exported from its torch twin (tiny models) runs within the parity bounds of
references/parity_tolerances.csv at 1 s and 5 s; the adapter's device choice; `rvc-bench run` and `infer` on it.
The export cache, the child export and the contract check of upstream-layout files: tests/test_onnx_files.py.

Measured on AMD EPYC, 2 cores, onnxruntime 1.32 (CPU), torch 2.13, tiny models, against the torch twin: log-mel
(against float64 numpy) rel L2 1.7e-5; RMVPE network alone 2e-6, whole stage 4.2e-4 at 5 s (the log-mel twins'
near-floor bins, as for MLX); HuBERT rel L2 <= 6e-7; synthesizer >= 122 dB SNR.
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest
import torch
from helpers import infer_synthetic, rvc
from onnx_exports import backend, hubert_models, mel_path, rmvpe_models, synth_inputs, synth_models, within_table

from rvc_bench import measure, parity, stages, tolerances
from rvc_bench.backends import ONNX_DEVICES, BackendError, OnnxBackend
from rvc_bench.fixtures import cache_dir, generate
from rvc_bench.machine import ONNX_PROVIDERS, onnx_devices
from rvc_bench.onnx_graph import OnnxModelError

SECONDS = (1, 5)
# log-mel against float64 numpy, as suites/test_mel.py: float32 rounding near the 1e-5 floor is ~1e-3 after the log
# (the table's "twin" max_abs); energetic bins (>= 1e-2) show the FFT's float32 accuracy directly, where ONNX
# Runtime's STFT kernel is less exact than torch's (the table's onnx row; measured 1.3e-5 / 3.4e-5 at 1 / 5 s).
MEL_ENERGETIC = np.log(1e-2)
SYNTH_VARIANTS = ("v2-40k", "v1-32k-nono")


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


@pytest.mark.parametrize("name", SYNTH_VARIANTS)
def test_streaming_graphs_return_the_twins_frames(name):
    """skip_head / return_length (rt spec §4.5) through the export's prior and decoder graphs: the torch twin's
    streamed frames within the synthesizer's bounds; the whole graph's emulation of the head (what a file without
    the streaming graphs gets) decodes the frames around the returned ones too and differs."""
    import dataclasses

    import torch

    from rvc_bench.synth import model_onnx, model_torch
    from rvc_bench.synth.config import stream_heads

    path, twin = synth_models(name)
    head, length, upp = 40, 12, twin.cfg.upp
    inputs = synth_inputs(twin.cfg, 0.6, seed=4)
    fh, _ = stream_heads(head, length)
    sine = None if inputs.sine_noise is None else inputs.sine_noise[head * upp : (head + length) * upp]
    part = dataclasses.replace(inputs, eps=inputs.eps[fh:], sine_noise=sine)
    heads = dict(skip_head=head, return_length=length)
    with torch.inference_mode():
        ref = twin.infer(**model_torch.prepare(part), **heads).numpy().reshape(-1)
    runner = model_onnx.load(path, backend())
    assert set(runner.parts) == set(model_onnx.PARTS)
    audio = runner.infer(**model_onnx.prepare(part), **heads).reshape(-1)
    within_table("synth", parity.tensor_metrics(audio, ref))
    runner.parts = {}
    emulated = runner.infer(**model_onnx.prepare(part), **heads).reshape(-1)
    assert emulated.shape == ref.shape and parity.tensor_metrics(emulated, ref)["snr_db"] < 40


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


def test_run_with_onnx_stores_rows_held_to_the_table_and_reports_them(tmp_path):
    """`rvc-bench run --backends torch,onnx` (tiny models): one process per backend, ONNX Runtime's rows in the same
    store with parity against torch within the table, and the report's tables naming onnx:cpu."""
    from rvc_bench import results, store

    plan = ("--stages", "mel,rmvpe", "--lengths", "0.5", "--rounds", "3", "--model-size", "tiny")
    proc = rvc("run", *plan, "--backends", "torch,onnx", "--store", tmp_path / "store", "--report", tmp_path / "B.md")
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

    from rvc_bench import fixtures

    voice = stages.SYNTH.checkpoint(cache_dir(), "tiny")
    src = tmp_path / "in.wav"
    sf.write(src, fixtures.generate(1.0, seed=5).audio, 16000, subtype="FLOAT")
    out = {}
    for name in ("torch", "onnx"):
        path = tmp_path / f"{name}.wav"
        assert infer_synthetic(voice, src, path, name) == 0
        out[name] = sf.read(path, dtype="float32")[0]
    assert "on onnx:cpu (onnxruntime " in capsys.readouterr().out
    assert out["onnx"].shape == out["torch"].shape and np.any(out["torch"])
    within_table(
        "pipeline",
        {"snr_db": parity.tensor_metrics(out["onnx"], out["torch"])["snr_db"]},
        check="e2e",
        only=("snr_db",),
    )
