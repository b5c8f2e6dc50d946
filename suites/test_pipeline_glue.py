"""The pipeline's numpy glue (spec §4, §7) against hand-computed values and definitions: split points, protect
mix, retrieval's neighbour weights and real faiss files, RMS envelope, int16 scaling, option checks and resampling.
Tolerances: see test_pipeline.py."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from pipeline_shared import SPLIT_WINDOWS, clip, split_points_by_definition
from test_bench_pipeline import models

from rvc_bench import pipeline, retrieval
from rvc_bench.audio import HOP, SAMPLE_RATE, highpass

# ---------------------------------------------------------------------------------------------------------------
# numpy pieces against hand-computed values


def test_split_points_cut_in_the_quietest_frame():
    w = SPLIT_WINDOWS
    rng = np.random.default_rng(0)
    x = 0.3 * rng.standard_normal(int(3.3 * SAMPLE_RATE))
    gaps = [int(1.1 * SAMPLE_RATE), int(2.55 * SAMPLE_RATE)]  # within +-0.3 s of 1.2 s and 2.4 s
    for g in gaps:
        x[g : g + 400] *= 1e-3
    cuts = pipeline.split_points(x, w)
    assert cuts == split_points_by_definition(x, w)
    assert len(cuts) == 2 and all(g - HOP <= c <= g + 400 for c, g in zip(cuts, gaps))
    # Cut only when len + 160 > t_max.
    assert pipeline.split_points(x[: w.t_max - HOP], w) == []
    assert len(pipeline.split_points(x[: w.t_max - HOP + 1], w)) == 1
    assert pipeline.split_points(x[: SAMPLE_RATE * 40], pipeline.Windows()) == []  # fp32 row: up to 41 s - 10 ms


def _speech_with_silent_gaps(seconds: float, seed: int) -> np.ndarray:
    """TTS-like audio: voiced 'words' (harmonics + breath noise) separated by digitally silent gaps of 50-600 ms.
    After the 48 Hz high-pass the gaps are not zero but decaying filter tails: the quietest 10 ms hold ~1e-13 to
    1e-11 of L1 energy, below the rounding of a running sum over the whole file."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    pos = 0
    while pos < x.size:
        n = min(int(rng.uniform(0.15, 0.6) * SAMPLE_RATE), x.size - pos)
        t = np.arange(n) / SAMPLE_RATE
        f0 = rng.uniform(90, 250)
        tone = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8))
        x[pos : pos + n] = 0.3 * np.sin(np.pi * t * SAMPLE_RATE / n) ** 0.5 * tone + 0.02 * rng.standard_normal(n)
        pos += n + int(rng.uniform(0.05, 0.6) * SAMPLE_RATE)
    return x


def _split_points_by_running_sum(x: np.ndarray, w: pipeline.Windows) -> list[int]:
    """The former implementation (cumsum difference), kept to show the signals below tell it apart."""
    xp = np.pad(np.abs(x), (HOP // 2, HOP // 2), mode="reflect")
    c = np.concatenate(([0.0], np.cumsum(xp)))
    energy = c[HOP : HOP + x.shape[0]] - c[: x.shape[0]]
    return [
        t - w.t_query + int(np.argmin(energy[t - w.t_query : t + w.t_query]))
        for t in range(w.t_center, x.shape[0], w.t_center)
    ]


def test_split_points_are_upstreams_on_digitally_silent_gaps():
    """Spec §1.5's arithmetic at the real windows (fp32 row) on 45 s, 80 s and 5 min: every cut equals upstream's
    loop, the cuts land in near-silence (so the summation order decides them), and the running-sum form picks
    different cuts (measured: all 10 differ here)."""
    w = pipeline.Windows()
    differs = 0
    for seconds, seed in [(45, 0), (80, 1), (300, 2)]:
        x = highpass(_speech_with_silent_gaps(seconds, seed))
        cuts = pipeline.split_points(x, w)
        assert len(cuts) == seconds // w.x_center and cuts == split_points_by_definition(x, w), seconds
        energy = [np.abs(x[c - HOP // 2 : c + HOP // 2]).sum() for c in cuts]
        assert max(energy) < 1e-10, energy
        differs += sum(a != b for a, b in zip(cuts, _split_points_by_running_sum(x, w)))
    print(f"running sum picks another cut at {differs} of 10")
    assert differs > 0


def test_protect_mix_by_hand():
    feats = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], np.float32)
    feats0 = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], np.float32)
    pitchf = np.array([0.0, 0.5, 1.0, 220.0], np.float32)  # unvoiced, below 1 Hz, 1 Hz, voiced
    out = pipeline.protect_mix(feats, feats0, pitchf, 0.25)
    expected = [[0.25 * 1, 0.25 * 2], [0.25 * 3 + 0.75, 0.25 * 4 + 0.75], [5, 6], [7, 8]]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_neighbour_weights_and_blend_by_hand():
    score = np.array([[1.0, 2.0, 4.0], [0.0, 3.0, 0.0], [1.0, 1.0, np.inf], [np.inf, np.inf, np.inf]], np.float32)
    ix = np.array([[0, 1, 2], [3, 1, 2], [1, 2, -1], [-1, -1, -1]])
    w = retrieval.neighbour_weights(score, ix)
    # row 0: (1/s)^2 = 1, 1/4, 1/16 -> / (21/16)
    np.testing.assert_allclose(w[0], np.array([16, 4, 1]) / 21, rtol=1e-12)
    np.testing.assert_array_equal(w[1], [0.5, 0, 0.5])  # two exact matches share the row
    np.testing.assert_array_equal(w[2], [0.5, 0.5, 0])  # an empty slot (id -1) gets nothing
    np.testing.assert_array_equal(w[3], [0, 0, 0])  # no neighbour at all
    database = np.arange(12, dtype=np.float32).reshape(4, 3)  # 4 vectors of 3
    feats = np.full((4, 3), 100.0, np.float32)
    out = retrieval.blend(feats, database, score, ix, 0.75)
    retrieved = [w[0] @ database[[0, 1, 2]], (database[3] + database[2]) / 2, (database[1] + database[2]) / 2, feats[3]]
    np.testing.assert_allclose(out, 0.75 * np.array(retrieved) + 0.25 * feats, rtol=1e-6)
    # Tiny distances do not overflow (upstream computes 1/score^2 in float32: inf/inf).
    np.testing.assert_allclose(
        retrieval.neighbour_weights(np.array([[1e-30, 2e-30]]), np.array([[0, 1]])), [[0.8, 0.2]], rtol=1e-12
    )


def test_index_file_is_the_real_format(tmp_path):
    faiss = pytest.importorskip("faiss")
    vectors = retrieval.synthetic_vectors(400, 32, seed=3)
    path = retrieval.write_index(tmp_path / "added_IVF10_Flat_nprobe_1_x_v2.index", vectors)
    raw = faiss.read_index(str(path))
    assert isinstance(raw, faiss.IndexIVFFlat) and raw.nlist == retrieval.n_ivf_for(400) == 10
    index = retrieval.load_index(path)
    assert index.nprobe == 1 and index.dim == 32
    np.testing.assert_array_equal(index.database, vectors)  # Flat stores vectors exactly; ids in insertion order
    # A stored vector finds itself (distance 0): with rate 1 the exact-match guard returns it unchanged.
    score, ix = index.search(vectors[:5])
    assert np.all(score[:, 0] == 0) and np.array_equal(ix[:, 0], np.arange(5))
    np.testing.assert_array_equal(index.blend(vectors[:5], 1.0), vectors[:5])
    # The weighted mean of the search result, done by hand.
    q = retrieval.synthetic_vectors(3, 32, seed=4)
    s, i = raw.search(q, retrieval.K)
    w = (1.0 / s.astype(np.float64)) ** 2
    w /= w.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        index.blend(q, 0.6), 0.6 * np.einsum("fk,fkc->fc", w, vectors[i]) + 0.4 * q, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(retrieval.RetrievalError, match="index vectors are 32-d but the content features are 16-d"):
        index.blend(q[:, :16], 0.5)


def test_index_errors(tmp_path, monkeypatch):
    faiss = pytest.importorskip("faiss")
    with pytest.raises(retrieval.RetrievalError, match="index file not found"):
        retrieval.load_index(tmp_path / "missing.index")
    (tmp_path / "junk.index").write_text("not an index")
    with pytest.raises(retrieval.RetrievalError, match="not a readable faiss index"):
        retrieval.load_index(tmp_path / "junk.index")
    trained = faiss.index_factory(8, "IVF2,Flat")
    trained.train(retrieval.synthetic_vectors(100, 8))
    faiss.write_index(trained, str(tmp_path / "trained_IVF2_Flat_nprobe_1_x_v2.index"))
    with pytest.raises(retrieval.RetrievalError, match=r"holds no vectors.*'added_'.*\(added_IVF2_Flat_nprobe_1_x_v2"):
        retrieval.load_index(tmp_path / "trained_IVF2_Flat_nprobe_1_x_v2.index")
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu were not installed
    with pytest.raises(retrieval.RetrievalError, match="pip install faiss-cpu"):
        retrieval.load_index(tmp_path / "junk.index")


def _rms_by_definition(y, frame, hop):
    y = np.pad(y, frame // 2)  # center=True, pad_mode "constant"
    return np.array([np.sqrt(np.mean(y[i : i + frame] ** 2)) for i in range(0, len(y) - frame + 1, hop)])


def test_rms_and_interpolation_match_their_definitions():
    torch = pytest.importorskip("torch")
    y = np.random.default_rng(0).standard_normal(1234)
    np.testing.assert_allclose(pipeline.rms(y, 100, 50), _rms_by_definition(y, 100, 50), rtol=1e-12)
    assert pipeline.rms(y, 100, 50).shape == (1 + 1234 // 50,)  # librosa's frame count with center=True
    v = np.random.default_rng(1).random(7)
    for size in (3, 7, 20, 1001):
        ref = torch.nn.functional.interpolate(torch.from_numpy(v)[None, None], size=size, mode="linear")[0, 0]
        np.testing.assert_allclose(pipeline.interp_linear(v, size), ref.numpy(), rtol=1e-12, atol=1e-15)


def test_rms_mix_imposes_a_known_envelope():
    sr = 8000
    t_in, t_out = np.arange(8 * SAMPLE_RATE) / SAMPLE_RATE, np.arange(8 * sr) / sr
    # Input: a 100 Hz sine at amplitude 0.2 for 4 s, then 0.6 (whole periods per 1 s frame: RMS = A / sqrt 2 exactly).
    ref = np.where(t_in < 4, 0.2, 0.6) * np.sin(2 * np.pi * 100 * t_in)
    out = (0.1 * np.sin(2 * np.pi * 100 * t_out)).astype(np.float32)
    first, second = (t_out >= 1.5) & (t_out < 2.5), (t_out >= 5.5) & (t_out < 6.5)  # away from edges and the step

    def amplitude(y, region):
        return np.sqrt(2 * np.mean(y[region].astype(np.float64) ** 2))

    for rate, a1, a2 in ((0.0, 0.2, 0.6), (0.5, np.sqrt(0.2 * 0.1), np.sqrt(0.6 * 0.1)), (1.0, 0.1, 0.1)):
        mixed = pipeline.rms_mix(out, sr, ref, rate)
        assert mixed.dtype == np.float32 and mixed.shape == out.shape
        assert amplitude(mixed, first) == pytest.approx(a1, rel=1e-5)
        assert amplitude(mixed, second) == pytest.approx(a2, rel=1e-5)
    np.testing.assert_allclose(pipeline.rms_mix(out, sr, ref, 1.0), out, rtol=1e-6)  # rate 1 leaves it alone


def test_int16_output_scaling():
    quiet = np.array([0.5, -0.25, 0.99, -0.3], np.float32)
    np.testing.assert_array_equal(pipeline.to_int16(quiet), [16384, -8192, 32440, -9830])  # x 32768, truncated
    loud = np.array([1.98, -0.99, 0.5], np.float32)  # peak 1.98 -> scaled to 0.99 of full scale
    np.testing.assert_array_equal(pipeline.to_int16(loud), [32440, -16220, 8192])


def test_options_are_checked():
    for bad, match in (
        (dict(index_rate=1.5), "index_rate"),
        (dict(protect=0.7), "protect"),
        (dict(rms_mix_rate=-0.1), "rms_mix_rate"),
        (dict(f0_up_key=float("nan")), "f0_up_key"),
        (dict(windows=pipeline.Windows(x_pad=0.333)), "x_pad"),
        (dict(windows=pipeline.Windows(x_query=40.0)), "x_query < x_center"),
        (dict(resample_sr=8000), "resample_sr"),
        (dict(resample_sr=10**6), "resample_sr"),
    ):
        with pytest.raises(pipeline.OptionError, match=match):
            pipeline.Options(**bad).check()


def test_resample_sr_resamples_before_the_int16_scaling():
    """Spec §7.5: the output is resampled (here with the input's resampler), then scaled to int16."""
    from rvc_bench.audio import resample

    tm, audio = models("torch"), clip(1.0, seed=9)
    base = pipeline.Options(deterministic=True)
    ref = pipeline.convert(tm, audio, base)
    out = pipeline.convert(tm, audio, dataclasses.replace(base, resample_sr=16000))
    assert out.sr == 16000 and ref.sr == tm.cfg.sr != 16000
    np.testing.assert_array_equal(out.waveform, resample(ref.waveform, ref.sr, 16000))
    np.testing.assert_array_equal(out.audio, pipeline.to_int16(out.waveform))
