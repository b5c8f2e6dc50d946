"""The rvc-bench command as a user meets it: run, report, doctor, convert, and bad input."""

import subprocess
import sys

import pytest

from rvc_bench import cli, machine


def rvc(*args, **kw):
    return subprocess.run([sys.executable, "-m", "rvc_bench.cli", *args], capture_output=True, text=True, **kw)


def test_gate_exit_status_says_cannot_decide_when_rounds_are_too_few(tmp_path):
    from rvc_bench import store

    ids = []
    for times in ([1.0, 1.01], [1.5, 1.51]):  # 2 rounds each: a 1.5x slowdown that cannot be decided
        run = store.Run(machine_id="m-1", model_size="full")
        for i, t in enumerate(times):
            run.add(stage="mel", variant="v", backend="mlx", device="cpu", device_name="cpu", dtype="float32",
                    audio_seconds=5, metric="time_warm", value=t, unit="s", round=i)
        run.flush(tmp_path, "b")
        ids.append(run.run_id)
    proc = rvc("gate", "--store", str(tmp_path), "--candidate", ids[1], "--baseline", ids[0])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot decide (n too small" in proc.stdout and "1 cannot decide" in proc.stdout


def test_report_from_an_empty_or_missing_store_fails_cleanly(tmp_path):
    (tmp_path / "store").mkdir()
    out = tmp_path / "B.md"
    for store in (tmp_path / "store", tmp_path / "missing"):
        proc = rvc("report", "--store", str(store), "-o", str(out))
        assert proc.returncode == 2 and proc.stderr.startswith("rvc-bench: error:") and proc.stderr.count("\n") == 1
    assert not out.exists()


def test_run_on_a_missing_device_is_a_clear_error_and_writes_nothing(tmp_path):
    if "mps" in machine.torch_devices():
        pytest.skip("MPS exists here")
    store = tmp_path / "store"
    proc = rvc("run", "--stages", "mel", "--lengths", "0.5", "--torch-device", "mps", "--store", str(store),
               "--report", str(tmp_path / "B.md"))
    assert proc.returncode not in (0, 1)
    assert "torch device 'mps' is not available here" in proc.stdout + proc.stderr
    assert not store.exists() and not (tmp_path / "B.md").exists()


@pytest.mark.parametrize("args,match", [(("run", "--stages", "bogus"), "unknown stage 'bogus'"),
                                        (("run", "--lengths", "-5"), "lengths must be between 0.1 s"),
                                        (("run", "--lengths", "abc"), "lengths must be seconds")])
def test_bad_arguments(args, match):
    proc = rvc(*args)
    assert proc.returncode == 2 and match in proc.stderr


def test_convert_missing_or_unknown_checkpoint(tmp_path):
    proc = rvc("convert", str(tmp_path / "nope.pth"))
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
    import torch

    torch.save({"something": torch.ones(1)}, tmp_path / "odd.pt")
    proc = rvc("convert", str(tmp_path / "odd.pt"))
    assert proc.returncode == 2 and "unrecognised checkpoint" in proc.stderr


def test_doctor_lists_devices_with_reasons():
    proc = rvc("doctor")
    assert proc.returncode == 0
    assert "torch:cpu   yes" in proc.stdout
    for name, dev in (("torch", "mps"), ("mlx", "gpu")):
        available = machine.torch_devices() if name == "torch" else machine.mlx_devices()
        if dev not in available:
            assert f"{name}:{dev}" in proc.stdout and machine.available_reason(name, dev) in proc.stdout


def test_convert_recognises_the_stage_and_writes_loadable_weights(tmp_path):
    from rvc_bench import converted, fixtures, stages

    for stage in (stages.RMVPE, stages.SYNTH):
        src, dst = stage.checkpoint(fixtures.cache_dir(), "tiny"), tmp_path / f"{stage.name}.safetensors"
        proc = rvc("convert", str(src), "-o", str(dst))
        assert proc.returncode == 0 and f"converted {stage.name} checkpoint" in proc.stdout, proc.stderr
        assert converted.read(dst, stage.name) is not None


def test_infer_output_format_follows_the_extension(tmp_path, capsys):
    """RVC's int16 samples, exactly, in WAV and FLAC (16-bit PCM); Vorbis in .ogg."""
    import numpy as np
    import soundfile as sf

    from rvc_bench import fixtures, stages

    voice = stages.SYNTH.checkpoint(fixtures.cache_dir(), "tiny")
    src = tmp_path / "in.wav"
    sf.write(src, fixtures.generate(0.5, seed=5).audio, 16000, subtype="FLOAT")
    heads = {"wav": b"RIFF", "flac": b"fLaC", "ogg": b"OggS"}
    for ext in heads:
        out = tmp_path / f"out.{ext}"
        assert cli.main(["infer", str(voice), str(src), "-o", str(out), "--seed", "1", "--model-size", "tiny",
                         "--backend", "mlx"]) == 0  # MLX: the faster of the two on a small CPU
        assert out.read_bytes()[:4] == heads[ext]
    wav, sr = sf.read(tmp_path / "out.wav", dtype="int16")
    info = sf.info(tmp_path / "out.wav")
    assert info.subtype == "PCM_16" and sr == 1000 and np.any(wav)
    np.testing.assert_array_equal(sf.read(tmp_path / "out.flac", dtype="int16")[0], wav)
    capsys.readouterr()
