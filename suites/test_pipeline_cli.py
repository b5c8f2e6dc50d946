"""`rvc-bench infer` (spec §1): end to end on tiny synthetic models, each backend's file exactly what the pipeline
returns for the options given; one clear line for each bad input; the exit status of a real process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pipeline_shared import clip
from test_bench_pipeline import checkpoints, models

from rvc_bench import pipeline
from rvc_bench.audio import SAMPLE_RATE
from rvc_bench.fixtures import cache_dir
from rvc_bench.synth import synthetic as synth_synthetic

# ---------------------------------------------------------------------------------------------------------------
# rvc-bench infer


def _wav(path, audio, sr=SAMPLE_RATE):
    import soundfile as sf

    sf.write(path, audio, sr, subtype="FLOAT")  # exact samples (the PCM_16 default would quantise them)
    return str(path)


def _infer(*args):
    from rvc_bench import cli

    return cli.main(["infer", *map(str, args)])


def test_cli_infer_end_to_end(tmp_path, capsys, tiny_index):
    import soundfile as sf

    audio = clip(1.0, seed=8)
    src = _wav(tmp_path / "in.wav", audio)
    voice = synth_synthetic.ensure_checkpoint(cache_dir(), "tiny")
    common = ["--model-size", "tiny", "--synthetic-models", "--seed", "3", "--index", tiny_index.path]
    common += ["--f0-up-key", "-2", "--index-rate", "0.5", "--protect", "0.2", "--rms-mix-rate", "0.5"]
    written = {}
    for backend in ("torch", "mlx"):
        out = tmp_path / "out" / f"{backend}.wav"
        assert _infer(voice, src, "-o", out, "--backend", backend, *common) == 0
        err = capsys.readouterr().err
        assert "using the synthetic tiny-size checkpoint" in err and "--hubert" in err and "--rmvpe" in err
        data, sr = sf.read(out, dtype="float32")
        assert sr == 1000  # the voice's rate, no resampling
        written[backend] = data
    # Each file holds exactly what the pipeline returns for those options (the int16 result, stored as float).
    opts = pipeline.Options(seed=3, f0_up_key=-2, index_rate=0.5, protect=0.2, rms_mix_rate=0.5)
    for backend in ("torch", "mlx"):
        direct = pipeline.convert(models(backend), audio, opts, tiny_index)
        assert np.array_equal(written[backend] * 32768, direct.audio), backend


BAD_INPUTS = {
    "missing input": (lambda d: ["VOICE", d / "nope.wav"], "audio file not found"),
    "unreadable wav": (lambda d: ["VOICE", d / "text.wav"], "unreadable audio"),
    "nine channels": (lambda d: ["VOICE", d / "nine.wav"], "9 channels"),
    "silent audio": (lambda d: ["VOICE", d / "silent.wav"], "silent"),
    "missing voice": (lambda d: [d / "nope.pth", d / "ok.wav"], "voice model not found"),
    "not a voice": (lambda d: [checkpoints()[1], d / "ok.wav"], "not an RVC voice model"),
    "unknown torch device": (lambda d: ["VOICE", d / "ok.wav", "--torch-device", "tpu"], "unknown torch device 'tpu'"),
    "unknown mlx device": (
        lambda d: ["VOICE", d / "ok.wav", "--backend", "mlx", "--mlx-device", "npu"],
        "unknown MLX device 'npu'",
    ),
    "index rate": (lambda d: ["VOICE", d / "ok.wav", "--index-rate", "2"], "index_rate must be in"),
    "protect": (lambda d: ["VOICE", d / "ok.wav", "--protect", "0.9"], "protect must be in"),
    "missing index": (lambda d: ["VOICE", d / "ok.wav", "--index", d / "nope.index"], "index file not found"),
    "missing hubert": (
        lambda d: ["VOICE", d / "ok.wav", "--hubert", d / "nope.pt", "--rmvpe", d / "nope.pt"],
        "HuBERT checkpoint not found",
    ),
}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    _wav(d / "ok.wav", clip(0.5))
    _wav(d / "nine.wav", np.full((SAMPLE_RATE, 9), 0.1, np.float32))
    _wav(d / "silent.wav", np.zeros(SAMPLE_RATE, np.float32))
    (d / "text.wav").write_text("RIFF? no")
    return d


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cli_infer_bad_input(case, bad_inputs, capsys):
    make, message = BAD_INPUTS[case]
    voice = str(synth_synthetic.ensure_checkpoint(cache_dir(), "tiny"))
    args = [voice if a == "VOICE" else a for a in make(bad_inputs)]
    out = bad_inputs / f"out-{case.replace(' ', '-')}.wav"
    assert _infer(*args, "-o", out, "--model-size", "tiny", "--synthetic-models") == 2
    lines = capsys.readouterr().err.splitlines()
    # Only the notes about synthetic checkpoints may come before the one error line.
    assert all(line.startswith("rvc-bench infer: no --") for line in lines[:-1]), lines
    assert lines[-1].startswith("rvc-bench: error: ") and message in lines[-1], lines
    assert not out.exists()


def test_cli_infer_exit_status_in_a_real_process(tmp_path):
    argv = ["infer", "voice.pth", str(tmp_path / "x.wav"), "-o", str(tmp_path / "o.wav"), "--synthetic-models"]
    proc = subprocess.run([sys.executable, "-m", "rvc_bench.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == "rvc-bench: error: voice model not found: voice.pth\n"
