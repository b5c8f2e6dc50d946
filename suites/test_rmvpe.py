"""RMVPE pitch stage: decoding, MLX-vs-torch parity of the network and of the whole stage, chunked inference (the
checkpoint format and strict loading: test_rmvpe_checkpoints.py; the models and bounds both share: rmvpe_twins.py;
the benchmark: test_bench_rmvpe.py; the MLX fast layers: tests/test_mlx_kernels.py).

Tolerances (MLX against torch, fp32, same weights). Measured on AMD EPYC, 2 cores, mlx 0.32.4, torch 2.13:
- network only (both fed torch's log-mel): tiny max |Δsalience| <= 2.4e-6 (0.1-20 s); full size 5 s 6.8e-6,
  60 s 1.1e-5, no voicing flip. The spec's floor (torch alone, 1 vs 2 threads) is 1e-6..6e-6: these are
  summation-order differences.
- whole stage (each backend's own log-mel): tiny <= 3.0e-4; full 5 s 5.6e-4, 60 s 7.5e-4 (3 of 6001 frames flip
  voicing, 0.05 %). The excess comes from the log-mel twins, which differ by up to 1.3e-3 in near-floor bins
  (fp32 FFT rounding; see suites/test_mel.py): the torch network fed MLX's log-mel moves by 5.55e-4 on its own.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np
import pytest
import torch
from rmvpe_twins import (
    assert_f0_close,
    assert_salience_close,
    mlx_model,
    net_mlx,
    net_torch,
    torch_log_mel,
    torch_model,
)

from rvc_bench import parity, tolerances
from rvc_bench.fixtures import cache_dir, generate
from rvc_bench.rmvpe import config as rconfig
from rvc_bench.rmvpe import convert, decode, model_mlx, model_torch, synthetic
from rvc_bench.rmvpe.config import THRESHOLD, preset

# ---------------------------------------------------------------------------------------------------------------
# Decoding (numpy, shared)


def _decode_loop(salience, threshold):
    """The spec's decoding written as a per-frame loop, to check the vectorised one against."""
    cents_map = np.pad(20.0 * np.arange(360) + 1997.3794084376191, (4, 4))
    padded = np.pad(salience, ((0, 0), (4, 4)))
    f0 = np.zeros(len(salience))
    for t, row in enumerate(salience):
        c = int(np.argmax(row)) + 4
        w = padded[t, c - 4 : c + 5]
        cents = np.sum(w * cents_map[c - 4 : c + 5]) / np.sum(w) if row.max() > threshold else 0.0
        f0[t] = 0.0 if cents == 0 else 10.0 * 2 ** (cents / 1200)
    return f0


def test_decode_matches_a_per_frame_loop_and_known_values():
    rng = np.random.default_rng(0)
    sal = (rng.random((200, 360)) ** 8 * 0.2).astype(np.float32)
    sal[:, [0, 359]] += np.float32(0.15)  # peaks at both edges: the window must read the zero padding
    sal[:20] *= np.float32(0.05)  # quiet frames (peaks <= 0.0175): unvoiced
    f0 = decode.decode(sal)
    np.testing.assert_allclose(f0, _decode_loop(sal, THRESHOLD), rtol=1e-12, atol=0)
    assert np.all(f0[:20] == 0) and np.all(f0[20:] > 0)
    one_peak = np.zeros((3, 360), np.float32)
    one_peak[0, 0] = 0.5  # bin 0 alone -> 31.70 Hz
    one_peak[1, 180] = one_peak[1, 179] = one_peak[1, 181] = 0.5  # symmetric -> bin 180 exactly
    one_peak[2, 100] = THRESHOLD  # at the threshold: unvoiced (strictly greater is voiced)
    expected = 10 * 2 ** ((20 * np.array([0, 180]) + 1997.3794084376191) / 1200)
    np.testing.assert_allclose(decode.decode(one_peak)[:2], expected, rtol=1e-12)
    assert decode.decode(one_peak)[2] == 0
    assert abs(expected[0] - 31.70) < 0.01


def test_coarse_pitch_and_transpose():
    f0 = np.array([0.0, 30.0, 50.0, 100.0, 440.0, 1100.0, 2000.0])
    coarse = decode.coarse_pitch(f0)
    assert coarse.tolist()[:3] == [1, 1, 1] and coarse[5] == 255 and coarse[6] == 255
    assert np.all(np.diff(coarse[2:]) >= 0) and 1 < coarse[3] < coarse[4] < 255
    mel = 1127 * np.log(1 + 440.0 / 700)  # the spec's constants, written out
    assert coarse[4] == np.rint((mel - 77.7550) * 254 / (1064.4082 - 77.7550) + 1)
    shifted = decode.transpose(f0, 12)
    np.testing.assert_allclose(shifted, 2 * f0)
    assert shifted[0] == 0


# ---------------------------------------------------------------------------------------------------------------
# Twin parity


FULL = pytest.mark.full_size


@pytest.mark.parametrize(
    "size,seconds", [("tiny", 0.1), ("tiny", 1.0), ("tiny", 5.0), pytest.param("full", 5.0, marks=FULL)]
)
def test_network_parity(size, seconds):
    mel = torch_log_mel(generate(seconds, seed=0).audio)  # 0.1 s: 11 frames, less than one 32-frame pad unit
    ref, out = net_torch(size, mel), net_mlx(size, mel)
    assert out.shape == ref.shape == (mel.shape[-1], 360)
    assert_salience_close(out, ref, f"network-{size}")
    assert_f0_close(decode.decode(out), decode.decode(ref))


@pytest.mark.parametrize("size,seed", [("tiny", 3), pytest.param("full", 0, marks=FULL)])
def test_stage_parity(size, seed):
    audio = generate(5.0, seed=seed).audio
    s_ref, f_ref = model_torch.RMVPE(torch_model(size))(torch.from_numpy(audio))
    s_out, f_out = model_mlx.RMVPE(mlx_model(size))(mx.array(audio))
    assert_salience_close(s_out, s_ref, tolerances.BENCHMARK)
    assert_f0_close(f_out, f_ref)


# ---------------------------------------------------------------------------------------------------------------
# Chunked inference


def test_receptive_field_is_derived_exactly():
    """config.receptive_field against the torch twin's gradients (tiny): for frames t at every alignment to the
    32-frame pooling grid, d cnn_features[t] / d mel is zero outside [t - R, t + R] (R is not too small: chunks
    with that overlap are exact) and reaches R at some alignment (R is not larger than the network's reach)."""
    cfg = preset("tiny")
    reach = rconfig.receptive_field(cfg)
    assert (reach, cfg.default_overlap, rconfig.receptive_field(preset("full")), preset("full").default_overlap) == (
        59,
        64,
        1583,
        1600,
    )
    model = model_torch.load(synthetic.build_state(cfg, kind="torch-init"), cfg)
    mel = torch.randn(1, cfg.n_mels, 512, generator=torch.Generator().manual_seed(0), requires_grad=True)
    features = model.cnn_features(mel)[0]  # [T, 384]
    weights = torch.randn(features.shape[-1], generator=torch.Generator().manual_seed(1))
    seen = 0
    for t in range(224, 256):
        (grad,) = torch.autograd.grad(features[t] @ weights, mel, retain_graph=True)
        support = np.flatnonzero(grad[0].abs().sum(0).numpy())
        assert support.min() >= t - reach and support.max() <= t + reach, (t, support.min(), support.max())
        seen = max(seen, t - support.min(), support.max() - t)
    assert seen == reach


KINDS = (
    synthetic.KINDS
)  # calibrated (forgets fast), torch-init (upstream's untrained E2E), long-memory (GRU keeps state)


@functools.lru_cache(maxsize=None)
def kind_model(framework: str, size: str, kind: str):
    path = synthetic.ensure_checkpoint(cache_dir(), size, kind=kind)
    return (convert.load_torch if framework == "torch" else convert.load_mlx)(path).model


def salience_of(framework: str, size: str, kind: str, mel: torch.Tensor, **chunking) -> np.ndarray:
    model = kind_model(framework, size, kind)
    if framework == "torch":
        with torch.inference_mode():
            return model.mel2hidden(mel, **chunking)[0].numpy()
    return np.array(model.mel2hidden(mx.array(mel.numpy().transpose(0, 2, 1)), **chunking)[0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("framework", ["torch", "mlx"])
def test_chunked_equals_whole_on_any_weights(framework, kind):
    """The U-Net in chunks with the receptive field as overlap, the BiGRU whole: one pass's numbers, on weights
    whose GRU forgets fast, on upstream's untrained network and on a GRU that keeps its state for ~400 frames.
    Tiny, chunk 64 + 2 x 64 context (one window 192 frames), at lengths of 1.6 to 5 windows, odd and 32-aligned.
    The control: the whole network in the same chunks (the old default, BiGRU cut at every chunk) must fail on the
    long-memory weights (measured 0.13 max |Δsalience| at 10 s), so these inputs can tell a wrong split."""
    bound = tolerances.bound("rmvpe", "chunked", "max_abs")
    for seconds in (3.07, 6.39, 10.0):  # 308, 640 and 1001 frames
        mel = torch_log_mel(generate(seconds, seed=0).audio)
        whole = salience_of(framework, "tiny", kind, mel)
        chunked = salience_of(framework, "tiny", kind, mel, chunk_frames=64)
        assert_salience_close(chunked, whole, "chunked")
        assert_f0_close(decode.decode(chunked), decode.decode(whole))
    if kind == "long-memory":
        cut = salience_of(framework, "tiny", kind, mel, chunk_frames=64, cut_gru=True)
        assert np.abs(cut - whole).max() > 1000 * bound


def test_bounded_chunk_runs_whole_what_one_window_covers():
    window = rconfig.CHUNK_FRAMES + 2 * preset("full").default_overlap
    assert window == 6144  # the largest pass MLX runs at once (config.CHUNK_FRAMES)
    assert rconfig.bounded_chunk(window, rconfig.CHUNK_FRAMES, 1600) is None  # one window covers it: whole
    assert rconfig.bounded_chunk(window + 1, rconfig.CHUNK_FRAMES, 1600) == rconfig.CHUNK_FRAMES
    assert rconfig.bounded_chunk(10**6, None, 1600) is None  # chunking off


@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_stage_chunks_long_inputs_by_default(backend):
    """The RMVPE stage's chunk_frames is a default: inputs longer than one window (chunk + 2 overlaps) run chunked,
    shorter ones whole, with the same plan on both twins. Tiny (overlap 64), chunk 256: one window is 384 frames."""
    if backend == "torch":
        stage = model_torch.RMVPE(torch_model("tiny"), chunk_frames=256)
        array, mel_of = torch.from_numpy, lambda a: torch_log_mel(a)
        net = lambda mel, **kw: net_torch("tiny", mel, **kw)  # noqa: E731
    else:
        stage = model_mlx.RMVPE(mlx_model("tiny"), chunk_frames=256)
        array, mel_of = mx.array, lambda a: stage.mel(mx.array(a))[None]
        net = lambda mel, **kw: np.array(mlx_model("tiny").mel2hidden(mel, **kw)[0])  # noqa: E731
    for seconds, chunked in ((3.83, False), (3.85, True), (10.0, True)):  # 384, 386 and 1001 frames
        audio = generate(seconds, seed=0).audio
        mel = mel_of(audio)
        got = np.asarray(stage.salience(array(audio)))
        np.testing.assert_array_equal(got, net(mel, chunk_frames=256) if chunked else net(mel))
    assert model_torch.RMVPE(torch_model("tiny")).chunk_frames is None  # whole, as upstream: the baseline's cost
    assert model_mlx.RMVPE(mlx_model("tiny")).chunk_frames == rconfig.CHUNK_FRAMES  # MLX's whole pass: 13.5 GiB


@pytest.mark.full_size
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("framework", ["torch", "mlx"])
def test_chunked_equals_whole_full(framework, kind):
    """Full size, 40 s (4001 frames), chunk 1024 + 2 x 1600 context: 4 chunks, an interior one cut on both sides."""
    mel = torch_log_mel(generate(40.0, seed=0).audio)
    whole = salience_of(framework, "full", kind, mel)
    chunked = salience_of(framework, "full", kind, mel, chunk_frames=1024)
    print(f"\n{framework} {kind} 40 s chunk 1024: max |Δsalience| {np.abs(chunked - whole).max():.3g}")
    assert_salience_close(chunked, whole, "chunked")
    assert_f0_close(decode.decode(chunked), decode.decode(whole))


@pytest.mark.full_size
@pytest.mark.parametrize("seconds", [60.0, 300.0])
@pytest.mark.parametrize("kind", ["torch-init", "long-memory"])
def test_mlx_default_equals_whole_at_1_and_5_min(kind, seconds):
    """The MLX stage as it runs by default (U-Net in 2944-frame chunks past one 6144-frame window) against the same
    network over the whole sequence (13.5 GiB at 5 min), on the weights that exposed the BiGRU-cutting default."""
    path = synthetic.ensure_checkpoint(cache_dir(), "full", kind=kind)
    audio = mx.array(generate(seconds, seed=0).audio)
    default = convert.load_mlx(path)
    whole = model_mlx.RMVPE(default.model, chunk_frames=None)
    s_default, f_default = default(audio)
    s_whole, f_whole = whole(audio)
    print(f"\nmlx {kind} {seconds:g} s default vs whole: max |Δsalience| {np.abs(s_default - s_whole).max():.3g}")
    assert_salience_close(s_default, s_whole, "chunked")
    assert_f0_close(f_default, f_whole)


# ---------------------------------------------------------------------------------------------------------------
# Real weights (--weights-dir with rmvpe.pt)


@pytest.mark.requires_weights
def test_real_weights_parity_and_accuracy(bench):
    path = bench.weights_dir / "rmvpe.pt"
    if not path.is_file():
        pytest.skip(f"no rmvpe.pt in {bench.weights_dir}")
    tm, mm = convert.load_torch(path), convert.load_mlx(path)
    assert tm.model.cfg == mm.model.cfg == preset("full")
    clip = generate(5.0, seed=0)
    s_ref, f_ref = tm(torch.from_numpy(clip.audio))
    s_out, f_out = mm(mx.array(clip.audio))
    assert_salience_close(s_out, s_ref, tolerances.BENCHMARK)
    assert_f0_close(f_out, f_ref)
    # Against the fixture's known contour (harmonic tones, noise bursts, silence). Not measured here (no weights on
    # this machine): set where a working pitch tracker must land on clean synthetic tones.
    for f0 in (f_ref, f_out):
        m = parity.pitch_metrics(f0, clip.f0)
        assert m["raw_pitch_accuracy"] >= 0.9 and m["voicing_recall"] >= 0.9, m
        assert m["voicing_false_alarm"] <= 0.2, m
