"""Parity metrics on hand-made cases with known answers."""

import numpy as np
import pytest

from rvc_bench import parity


def test_identical_tensors():
    x = np.linspace(-1, 1, 101)
    m = parity.tensor_metrics(x, x)
    assert m["max_abs"] == 0 and m["mean_abs"] == 0 and m["rel_l2"] == 0
    assert m["pearson"] == pytest.approx(1) and m["cosine"] == pytest.approx(1) and m["snr_db"] == np.inf


def test_known_offset_and_scale():
    ref = np.array([3.0, 4.0])  # norm 5
    m = parity.tensor_metrics(ref + np.array([0.0, 0.5]), ref)
    assert m["max_abs"] == 0.5 and m["mean_abs"] == 0.25
    assert m["rel_l2"] == pytest.approx(0.1)
    assert m["snr_db"] == pytest.approx(20.0)  # 10 log10(25 / 0.25)
    # a 1% scale error is 40 dB SNR and leaves correlation at 1
    x = np.sin(np.arange(1000.0))
    s = parity.tensor_metrics(1.01 * x, x)
    assert s["snr_db"] == pytest.approx(40.0) and s["pearson"] == pytest.approx(1.0)


def test_anticorrelated_and_orthogonal():
    x = np.array([1.0, -1.0, 1.0, -1.0])
    assert parity.tensor_metrics(-x, x)["pearson"] == pytest.approx(-1)
    assert parity.tensor_metrics(np.array([1.0, 0]), np.array([0, 1.0]))["cosine"] == pytest.approx(0)


def test_shape_mismatch_and_empty_are_errors():
    with pytest.raises(ValueError, match="shape mismatch"):
        parity.tensor_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        parity.tensor_metrics(np.zeros(0), np.zeros(0))


def test_pitch_metrics_by_hand():
    ref = np.array([100.0, 100.0, 100.0, 100.0, 0.0, 0.0, 0.0, 0.0])
    #   exact, +1 semitone (100 c), +20 c, octave up, unvoiced ok, false alarm, unvoiced ok, unvoiced ok
    test = np.array([100.0, 100 * 2 ** (1 / 12), 100 * 2 ** (20 / 1200), 200.0, 0.0, 150.0, 0.0, 0.0])
    m = parity.pitch_metrics(test, ref)
    assert m["raw_pitch_accuracy"] == pytest.approx(2 / 4)  # exact and +20 c
    assert m["raw_chroma_accuracy"] == pytest.approx(3 / 4)  # the octave error folds away
    assert m["voicing_recall"] == 1.0
    assert m["voicing_false_alarm"] == pytest.approx(1 / 4)
    assert m["voicing_disagreement"] == pytest.approx(1 / 8)
    assert m["cents_p50"] == pytest.approx(60.0)  # |Δc| = 0, 100, 20, 1200 -> median 60
    assert m["cents_p95"] == pytest.approx(np.percentile([0, 100, 20, 1200], 95))
    assert m["frames_apart"] == 3  # the false alarm, +1 semitone and the octave (+20 c is within 50 c)


def test_pitch_missed_voicing_counts_against_recall():
    ref = np.array([200.0, 200.0, 0.0])
    m = parity.pitch_metrics(np.array([200.0, 0.0, 0.0]), ref)
    assert (
        m["voicing_recall"] == 0.5
        and m["raw_pitch_accuracy"] == 0.5
        and m["voicing_disagreement"] == pytest.approx(1 / 3)
    )


def test_decision_margin_and_ties_by_hand():
    """Margins computed by hand: distance to the threshold, and to the best bin >= CLEAR_BINS from the argmax."""
    thr = 0.03
    sal = np.full((4, 10), 0.001)
    sal[0, 2] = 0.5  # clear: peak 0.5, rival 0.001 -> margin 0.47 (threshold is nearer)
    sal[1, 2], sal[1, 7] = 0.5, 0.4995  # a near-tie 5 bins apart -> 5e-4
    sal[2, 2], sal[2, 3] = 0.5, 0.4999  # the runner-up is the neighbour (within CLEAR_BINS): still 0.47
    sal[3, 4] = thr + 2e-4  # barely voiced -> 2e-4 from the threshold
    np.testing.assert_allclose(parity.decision_margin(sal, thr), [0.47, 5e-4, 0.47, 2e-4], rtol=1e-9)
    ref = np.array([100.0, 100.0, 100.0, 100.0])
    test = np.array([200.0, 300.0, 100.0, 0.0])  # apart on frames 0 (decided), 1 (a tie) and 3 (a tie)
    m = parity.pitch_metrics(test, ref, parity.decision_margin(sal, thr))
    assert m["frames_apart"] == 3 and m["frames_apart_tied"] == 2
    assert "frames_apart_tied" not in parity.pitch_metrics(test, ref)


def test_audio_metrics_identical_and_noisy():
    rng = np.random.default_rng(0)
    sr = 16000
    x = np.sin(2 * np.pi * 220 * np.arange(sr) / sr) * 0.5
    same = parity.audio_metrics(x, x, sr)
    assert same["mrstft"] == pytest.approx(0, abs=1e-12) and same["log_mel_corr"] == pytest.approx(1)
    noisy = parity.audio_metrics(x + 0.05 * rng.standard_normal(sr), x, sr)
    assert noisy["mrstft"] > 0.1 and noisy["log_mel_corr"] < same["log_mel_corr"]
    assert noisy["snr_db"] == pytest.approx(10 * np.log10(0.125 / 0.0025), abs=0.3)
