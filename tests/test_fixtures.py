"""Deterministic audio with a known f0 contour."""

import numpy as np
import pytest

from rvc_bench import audio, fixtures


def test_deterministic_and_exact_length():
    a, b = fixtures.generate(2.5, seed=3), fixtures.generate(2.5, seed=3)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.audio.dtype == np.float32 and a.audio.size == 40000 and a.f0.size == 40000 // 160 + 1
    assert not np.array_equal(a.audio, fixtures.generate(2.5, seed=4).audio)


def test_contains_voiced_unvoiced_and_quiet_parts():
    c = fixtures.generate(20, seed=0)
    voiced = c.f0 > 0
    assert 0.3 < voiced.mean() < 0.95
    assert np.all((c.f0[voiced] > 60) & (c.f0[voiced] < 600))
    assert np.abs(c.audio).max() < 1.0


def test_known_f0_is_the_sounding_pitch():
    c = fixtures.generate(10, seed=1)
    hits = 0
    # frames well inside voiced segments, where a 64 ms window sees one steady tone
    frames = [t for t in np.flatnonzero(c.f0 > 0)[::50] if 4 <= t < c.f0.size - 4 and np.all(c.f0[t - 4 : t + 5] > 0)]
    assert len(frames) >= 5
    for t in frames:
        seg = c.audio[t * 160 - 512 : t * 160 + 512]
        spec = np.abs(np.fft.rfft(seg * np.hanning(1024), 16384))
        f_peak = np.argmax(spec[: int(700 / 16000 * 16384)]) * 16000 / 16384
        hits += abs(f_peak - c.f0[t]) < 0.06 * c.f0[t]
    assert hits >= 0.8 * len(frames)


def test_cache_round_trip(tmp_path):
    first = fixtures.clip(1.5, seed=2, directory=tmp_path)
    again = fixtures.clip(1.5, seed=2, directory=tmp_path)
    np.testing.assert_array_equal(first.audio, again.audio)
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros(0), "empty"),
        (np.full(16000, np.nan), "NaN"),
        (np.zeros(16000), "silent"),
        (np.full(16000, 1 / 32768), "silent"),
        (np.ones(100), "too short"),
        (np.ones((2, 16000)), "mono"),
    ],
)
def test_bad_audio_is_rejected(bad, match):
    with pytest.raises(audio.AudioError, match=match):
        audio.validate(bad)
