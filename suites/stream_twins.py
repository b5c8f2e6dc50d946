"""How two streams are compared (test_stream.py, test_bench_stream.py): the live mode runs RMVPE two or three times
on every frame, each time on a short window, so on any input some of those calls meet a near-tie between two pitch
candidates that float32 rounding decides; a frame flipped there changes the NSF phase of every later sample. So the
pitch and the rest are judged apart (references/parity_tolerances.csv, stage stream, check twins):

- pitch: every RMVPE call of the two streams (the same input windows on both sides), frame by frame, with how many
  of the frames apart torch decided by less than parity.TIE_MARGIN (ties) and how many it did not (divergences);
- the rest (content features, synthesis, RMS mix, SOLA): the tested backend's stream given torch's RMVPE output
  call by call, against torch's stream, block by block, with its SOLA offsets;
- the free-running stream's worst block and offsets are stored beside them, unjudged: after a tie they measure
  the tie, not the port.
"""

from __future__ import annotations

import numpy as np

from rvc_bench import parity, pipeline, stream
from rvc_bench.rmvpe.config import THRESHOLD


class PitchLog:
    """A models' pitch(), each call's (input window, salience, f0) kept in order."""

    def __init__(self, models):
        self.models, self.calls = models, []

    def __call__(self, audio: np.ndarray):
        salience, f0 = self.models.pitch(audio)
        self.calls.append((audio.copy(), salience, f0))
        return salience, f0


class Replay:
    """pitch() answering with a logged stream's results, call by call, on the same windows."""

    def __init__(self, log: PitchLog):
        self.calls = iter(log.calls)

    def __call__(self, audio: np.ndarray):
        window, salience, f0 = next(self.calls)
        assert np.array_equal(window, audio), "the replayed stream was fed other input"
        return salience, f0


def worst_block_snr(test: stream.StreamResult, ref: stream.StreamResult) -> float:
    b = ref.frames.block * ref.sr // 100
    return min(
        parity.tensor_metrics(test.audio[i : i + b], ref.audio[i : i + b])["snr_db"]
        for i in range(0, ref.audio.size, b)
    )


def offsets_apart(test: stream.StreamResult, ref: stream.StreamResult) -> float:
    return float(np.sum(np.array(test.offsets) != ref.offsets))


def pitch_metrics(test: PitchLog, ref: PitchLog) -> dict:
    """The two streams' RMVPE calls frame by frame: parity.pitch_metrics with torch's decision margins, and
    untied_frames_apart, the frames apart that are not ties."""
    f0 = lambda log: np.concatenate([c[2] for c in log.calls])  # noqa: E731
    margin = np.concatenate([parity.decision_margin(c[1], THRESHOLD) for c in ref.calls])
    m = parity.pitch_metrics(f0(test), f0(ref), margin)
    return {**m, "untied_frames_apart": m["frames_apart"] - m["frames_apart_tied"]}


def logged_run(models, audio, opts) -> tuple[stream.StreamResult, PitchLog]:
    """A stream (untimed: the log's copies would count in a timed run's memory) with its RMVPE calls."""
    log = PitchLog(models)
    return stream.run(pipeline.WithPitch(models, log), audio, opts), log


def twin_metrics(test_models, audio, opts, ref: tuple[stream.StreamResult, PitchLog]) -> dict:
    """The stream of `test_models` against torch's logged_run `ref` on the same audio, options and noise: the
    judged metrics and the free-running ones."""
    (ref_out, ref_log), (out, log) = ref, logged_run(test_models, audio, opts)
    same = stream.run(pipeline.WithPitch(test_models, Replay(ref_log)), audio, opts)
    return {
        **pitch_metrics(log, ref_log),
        "snr_db": worst_block_snr(out, ref_out),
        "offsets_apart": offsets_apart(out, ref_out),
        "same_f0_snr_db": worst_block_snr(same, ref_out),
        "same_f0_offsets_apart": offsets_apart(same, ref_out),
    }
