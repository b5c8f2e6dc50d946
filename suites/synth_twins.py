"""What the synthesizer's parity tests share (test_synth.py, test_synth_checkpoints.py): the tiny voices and their
twins, read once; a fixture f0 track; both twins run on the same inputs and compared by SNR, against the bounds of
references/parity_tolerances.csv."""

from __future__ import annotations

import functools

import numpy as np

from rvc_bench import parity, tolerances
from rvc_bench.fixtures import cache_dir, generate
from rvc_bench.synth import convert, synthetic

SNR_TINY_DB = tolerances.bound("synth", "twins-tiny", "snr_db")  # references/parity_tolerances.csv
SNR_FULL_DB = tolerances.bound("synth", "twins-full", "snr_db")
INTERMEDIATES = ("m_p", "logs_p", "z", "har", "audio")


@functools.lru_cache(maxsize=None)
def tiny_voice(name: str) -> convert.VoiceCheckpoint:
    return convert.read_voice(synthetic.ensure_checkpoint(cache_dir(), "tiny", variant=name))


def twins(voice: convert.VoiceCheckpoint):
    """Both twins of one checkpoint, read once (what convert.load_torch / load_mlx do, without reading twice)."""
    from rvc_bench.synth import model_mlx, model_torch

    return model_torch.load(voice.state, voice.config), model_mlx.load(convert.to_mlx(voice.state), voice.config)


@functools.lru_cache(maxsize=None)
def tiny_twins(name: str):
    return twins(tiny_voice(name))


def f0_track(frames: int, seed: int = 3) -> np.ndarray:
    """A fixture f0 contour of exactly `frames` frames: voiced glides with an unvoiced gap at 40-50 %."""
    f0 = generate(frames / 100 + 0.02, seed=seed).f0[:frames].copy()
    f0[int(0.4 * frames) : int(0.5 * frames) + 1] = 0.0
    return f0


def run_twins(torch_model, mlx_model, inputs) -> tuple[dict, dict]:
    from rvc_bench.synth import model_mlx, model_torch

    return model_torch.run(torch_model, inputs), model_mlx.run(mlx_model, inputs)


def snrs(test: dict, ref: dict) -> dict[str, float]:
    assert test.keys() == ref.keys()
    return {k: parity.tensor_metrics(test[k], ref[k])["snr_db"] for k in ref}
