"""The rvc-bench command as a user meets it: run, report, doctor, convert, and bad input."""

import re

import pytest
from helpers import add_times, infer_synthetic, pytest_child, rvc

from rvc_bench import cli, machine


def test_gate_exit_status_says_cannot_decide_when_rounds_are_too_few(tmp_path):
    from rvc_bench import store

    ids = []
    for times in ([1.0, 1.01], [1.5, 1.51]):  # 2 rounds each: a 1.5x slowdown that cannot be decided
        run = store.Run(machine_id="m-1", model_size="full")
        add_times(run, times, stage="mel", variant="v", backend="mlx", audio_seconds=5)
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
    proc = rvc(
        "run",
        "--stages",
        "mel",
        "--lengths",
        "0.5",
        "--torch-device",
        "mps",
        "--store",
        str(store),
        "--report",
        str(tmp_path / "B.md"),
    )
    assert proc.returncode not in (0, 1)
    assert "torch device 'mps' is not available here" in proc.stdout + proc.stderr
    assert not store.exists() and not (tmp_path / "B.md").exists()


@pytest.mark.parametrize(
    "args,match",
    [
        (("run", "--stages", "bogus"), "unknown stage 'bogus'"),
        (("run", "--lengths", "-5"), "lengths must be between 0.1 s"),
        (("run", "--lengths", "abc"), "lengths must be seconds"),
    ],
)
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
    assert re.search(r"^  torch:cpu +yes", proc.stdout, re.M) and re.search(r"^  onnx:cpu +yes", proc.stdout, re.M)
    for name, dev in (("torch", "mps"), ("mlx", "gpu"), ("onnx", "cuda"), ("onnx", "coreml")):
        if dev not in machine.available_devices(name):
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
        assert infer_synthetic(voice, src, out, "mlx") == 0  # MLX: the faster of the two on a small CPU
        assert out.read_bytes()[:4] == heads[ext]
    wav, sr = sf.read(tmp_path / "out.wav", dtype="int16")
    info = sf.info(tmp_path / "out.wav")
    assert info.subtype == "PCM_16" and sr == 1000 and np.any(wav)
    np.testing.assert_array_equal(sf.read(tmp_path / "out.flac", dtype="int16")[0], wav)
    capsys.readouterr()


def test_infer_converts_a_44k1_stereo_wav_and_a_22k05_mono_flac(tmp_path, capsys):
    """Each converts to exactly what its 16 kHz mono reading (audio.read_audio, written as a float wav) converts to;
    --deterministic makes runs comparable; --resample-sr sets the output rate."""
    import numpy as np
    import soundfile as sf

    from rvc_bench import audio, fixtures
    from rvc_bench.synth import synthetic

    voice = synthetic.ensure_checkpoint(fixtures.cache_dir(), "tiny")
    clip = fixtures.generate(0.6, seed=7).audio
    stereo = np.stack([audio.resample(clip, 16000, 44100), 0.5 * audio.resample(clip[::-1], 16000, 44100)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 44100, subtype="PCM_16")
    sf.write(tmp_path / "mono.flac", audio.resample(clip, 16000, 22050), 22050, subtype="PCM_24")
    common = ["--model-size", "tiny", "--synthetic-models", "--deterministic", "--backend", "mlx"]

    def infer(src, out, *extra):
        assert cli.main(["infer", str(voice), str(src), "-o", str(tmp_path / out), *common, *extra]) == 0
        return sf.read(tmp_path / out, dtype="int16")

    outputs = {}
    for name, described in (
        ("stereo.wav", "44100 Hz, 2 channels, WAV PCM_16"),
        ("mono.flac", "22050 Hz, 1 channel, FLAC PCM_24"),
    ):
        x, _ = audio.read_audio(tmp_path / name)
        sf.write(tmp_path / f"{name}.16k.wav", x, 16000, subtype="FLOAT")
        outputs[name], sr = infer(tmp_path / name, f"{name}.out.wav")
        assert described in capsys.readouterr().out
        want, _ = infer(tmp_path / f"{name}.16k.wav", f"{name}.16k.out.wav")
        assert sr == 1000 and np.any(outputs[name])
        np.testing.assert_array_equal(outputs[name], want)
    resampled, sr = infer(tmp_path / "stereo.wav", "48k.wav", "--resample-sr", "48000")
    assert sr == 48000 and resampled.size == -(-outputs["stereo.wav"].size * 48000 // 1000)
    capsys.readouterr()


def test_infer_and_convert_take_real_world_layouts(tmp_path, capsys):
    """A Hugging Face ContentVec folder and an rmvpe .safetensors give the output of the same weights as
    hubert_base.pt and rmvpe.pt; `convert` recognises both; a voice trained on another embedder is reported."""
    import numpy as np
    import soundfile as sf
    from safetensors.torch import save_file

    from rvc_bench import converted, fixtures, stages
    from rvc_bench.checkpoints import load_pickled, save_torch_checkpoint
    from rvc_bench.hubert import get_config, synthetic

    cache = fixtures.cache_dir()
    voice = stages.SYNTH.checkpoint(cache, "tiny")
    hubert_pt, rmvpe_pt = stages.pipeline_checkpoints(cache, "tiny")  # fp16, seed 0, preset tiny-768
    folder = synthetic.write_hf_folder(tmp_path / "contentvec", get_config(stages.PIPELINE_HUBERT["tiny"]), seed=0)
    save_file(load_pickled(rmvpe_pt), tmp_path / "rmvpe.safetensors", metadata={"format": "pt"})
    sf.write(tmp_path / "in.wav", fixtures.generate(0.5, seed=5).audio, 16000, subtype="FLOAT")

    def infer(out, voice_path, hubert, rmvpe):
        assert (
            cli.main(
                [
                    "infer",
                    str(voice_path),
                    str(tmp_path / "in.wav"),
                    "-o",
                    str(tmp_path / out),
                    "--hubert",
                    str(hubert),
                    "--rmvpe",
                    str(rmvpe),
                    "--model-size",
                    "tiny",
                    "--deterministic",
                    "--backend",
                    "mlx",
                ]
            )
            == 0
        )
        return sf.read(tmp_path / out, dtype="int16")[0]

    upstream = infer("upstream.wav", voice, hubert_pt, rmvpe_pt)
    np.testing.assert_array_equal(infer("layouts.wav", voice, folder, tmp_path / "rmvpe.safetensors"), upstream)
    assert "note" not in capsys.readouterr().err  # a voice without embedder_model: ContentVec
    save_torch_checkpoint(tmp_path / "spin.pth", {**load_pickled(voice), "embedder_model": "spin"})
    infer("spin.wav", tmp_path / "spin.pth", folder, rmvpe_pt)
    assert "spin.pth was trained on 'spin' features (its embedder_model)" in capsys.readouterr().err

    dst = tmp_path / "rmvpe-converted.safetensors"
    assert cli.main(["convert", str(tmp_path / "rmvpe.safetensors"), "-o", str(dst)]) == 0
    assert "converted rmvpe checkpoint" in capsys.readouterr().out and converted.read(dst, "rmvpe") is not None
    assert cli.main(["convert", str(dst), "-o", str(tmp_path / "again.safetensors")]) == 2
    assert "already converted ('rmvpe' weights" in capsys.readouterr().err
    # `convert` reads a folder as a HuBERT (the full preset: this tiny one is refused by its config, field named).
    assert stages.recognise_path(folder) is stages.HUBERT
    assert cli.main(["convert", str(folder)]) == 2
    assert "contentvec/config.json: intermediate_size = 128, expected 3072" in capsys.readouterr().err
    assert not (tmp_path / "contentvec.safetensors").exists()


def test_the_plan_survives_the_pytest_command_line_it_becomes():
    """`run` and `ab` build the same plan from the same options, and what each backend's pytest process reads back
    from its command line (the plugin's declarations, the same ones) is that plan, for that backend."""
    import argparse

    from rvc_bench import plan

    options = [
        "--lengths",
        "5,60",
        "--rounds",
        "7,3",
        "--warmup",
        "1,0",
        "--model-size",
        "tiny",
        "--backends",
        "torch,mlx",
        "--mlx-device",
        "cpu",
        "--fresh-process",
        "--weights-dir",
        "/w",
        "--machine-label",
        "box",
        "--store",
        "/s",
        "--variants",
        "fp32,q8",
    ]
    run, ab = (cli.build_parser().parse_args([*head, *options]) for head in (["run"], ["ab", "main"]))
    built = [plan.Plan.from_options(lambda name, a=a: getattr(a, name, None)) for a in (run, ab)]
    assert built[0] == built[1]
    p = built[0]
    assert (p.lengths, p.rounds, p.warmup, p.device("mlx"), p.machine_label) == (
        (5.0, 60.0),
        (7, 3),
        (1, 0),
        "cpu",
        "box",
    )
    plugin = argparse.ArgumentParser()
    plan.add_run_options(plugin.add_argument, backends="torch,mlx,onnx", store=None, lengths=None, model_size=None)
    back = plugin.parse_args(p.pytest_args("mlx"))
    assert plan.Plan.from_options(lambda name: getattr(back, name, None)) == p.replace(backends=("mlx",))
    assert p.stored() == {
        "backends": ["torch", "mlx"],
        "stages": list(plan.SUITES),
        "lengths": [5.0, 60.0],
        "model_size": "tiny",
        "rounds": [7, 3],
        "warmup": [1, 0],
        "fresh_process": True,
        "variants": ["fp32", "q8"],
    }


def test_one_lengths_limit_for_the_cli_and_pytest():
    proc = pytest_child("suites/test_bench_mel.py", "--collect-only", "--lengths", "3601")
    assert proc.returncode == 4 and "between 0.1 s (the shortest audio the stages take) and 3600 s" in proc.stderr
    assert "and 3600 s" in rvc("run", "--lengths", "3601").stderr


def test_doctor_table_gives_each_missing_device_its_reason_and_fix(monkeypatch):
    """One table decides both the reason and the fix, per platform: here an Apple Silicon Mac without MPS (old
    macOS) and no Metal for MLX, and a Linux box with an NVIDIA driver but CPU-only builds."""
    import platform

    import torch  # noqa: F401  (loaded before the platform is faked: torch picks its libraries by platform)

    monkeypatch.setattr(machine, "torch_devices", lambda: ("cpu",))
    monkeypatch.setattr(machine, "mlx_devices", lambda: ("cpu",))
    monkeypatch.setattr(machine, "framework_version", lambda backend: "1.0")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    mps, gpu = machine.diagnose("torch", "mps"), machine.diagnose("mlx", "gpu")
    assert not mps.available and "macOS < 12.3" in mps.reason
    assert mps.fix == "pip install -U torch (MPS needs macOS >= 12.3)"
    assert gpu.fix == "none here: MLX sees no Metal GPU (a virtual machine?)"
    assert machine.diagnose("torch", "cuda").fix == "none here: no NVIDIA GPU"  # no NVIDIA GPU on a Mac
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(machine.os.path, "exists", lambda path: path == "/proc/driver/nvidia/version")
    assert machine.diagnose("mlx", "gpu").fix == "pip install -e '.[cuda]'"
    assert machine.diagnose("torch", "mps").fix == "none here: needs a Mac with Apple Silicon"
    assert machine.diagnose("torch", "cuda").fix.startswith("pip install --force-reinstall 'torch")
    assert machine.diagnose("torch", "cpu") == machine.Diagnosis("torch", "cpu", True)
    monkeypatch.setattr(machine, "framework_version", lambda backend: None)
    monkeypatch.setattr(machine, "mlx_devices", lambda: ())
    missing = machine.diagnose("mlx", "cpu")
    assert missing.reason.startswith("mlx is not installed") and missing.fix == machine.INSTALL
