"""Bad input through the CLI, as a careless user or an attacker gives it: every case ends in one clear line.

For every case: a non-zero exit, a last stderr line `rvc-bench: error: ...` that names the problem and the file
(or option), no traceback, nothing in the case's folder created or altered, and no payload marker. Inputs are
generated on the fly with tiny models; the CLI runs in this process (`cli.main`), where an exception escaping it
is exactly what would have printed a traceback.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bad_input_files import MARKER, make_inputs

from rvc_bench import audio, cli


@dataclass
class Case:
    argv: Callable[[Path], list]  # folder with the good inputs -> command line
    needles: tuple[str, ...]  # what the last stderr line must say (the problem; the file or option)
    env: dict[str, str] = field(default_factory=dict)  # {VAR: name of a file or folder in the case's folder}
    skip_as_root: bool = False  # permissions do not bind root


TINY = ("--model-size", "tiny")
SYNTHETIC = (*TINY, "--synthetic-models")  # infer: synthetic HuBERT/RMVPE


def infer_argv(d, *rest, voice="voice.pth", wav="in.wav", out="o.wav"):
    """`rvc-bench infer` on the tiny synthetic models, the voice, the input and the output named in `d`."""
    return ["infer", d / voice, d / wav, "-o", d / out, *SYNTHETIC, *rest]


RUN = lambda d, *rest: [  # noqa: E731
    "run",
    "--stages",
    "mel",
    "--lengths",
    "0.5",
    *TINY,
    "--store",
    d / "new_store",
    "--report",
    d / "new.md",
    *rest,
]

CASES = {
    # convert: unreadable, wrong or hostile checkpoints
    "convert empty file": Case(lambda d: ["convert", d / "empty.pth"], ("empty file", "empty.pth")),
    "convert random bytes": Case(lambda d: ["convert", d / "random.pth"], ("not a readable", "random.pth")),
    "convert truncated zip": Case(lambda d: ["convert", d / "truncated.pth"], ("not a readable", "truncated.pth")),
    "convert a folder": Case(
        lambda d: ["convert", d / "folder.pth", "-o", d / "n.safetensors"], ("folder.pth", "folder without config.json")
    ),
    "convert missing file": Case(lambda d: ["convert", d / "nope.pth"], ("not found", "nope.pth")),
    "convert TorchScript": Case(lambda d: ["convert", d / "script.pth"], ("TorchScript", "script.pth")),
    "convert payload": Case(lambda d: ["convert", d / "evil.pth"], ("refusing to load global", "evil.pth")),
    "convert unknown dict": Case(lambda d: ["convert", d / "unknown.pth"], ("unrecognised checkpoint", "unknown.pth")),
    "convert bare tensor": Case(lambda d: ["convert", d / "tensor.pth"], ("unrecognised checkpoint", "tensor.pth")),
    "convert voice as rmvpe": Case(
        lambda d: ["convert", d / "voice.pth", "--kind", "rmvpe"], ("voice.pth", "state dict of tensors")
    ),
    "convert rmvpe as hubert": Case(lambda d: ["convert", d / "rmvpe.pt", "--kind", "hubert"], ("rmvpe.pt", "HuBERT")),
    "convert hubert as voice": Case(
        lambda d: ["convert", d / "hubert_base.pt", "--kind", "synth"], ("not an RVC voice model", "hubert_base.pt")
    ),
    "convert NaN weights": Case(
        lambda d: ["convert", d / "nan_voice.pth"], ("NaN", "dec.conv_post.weight", "nan_voice.pth")
    ),
    "convert rate not the decoder's": Case(
        lambda d: ["convert", d / "sr_voice.pth"], ("sample rate 1100", "sr_voice.pth")
    ),
    "convert weight is a list": Case(
        lambda d: ["convert", d / "list_weight.pth", "--kind", "synth"], ("'weight'", "list_weight.pth")
    ),
    "convert short config": Case(lambda d: ["convert", d / "short_config.pth"], ("config", "short_config.pth")),
    "convert missing key": Case(
        lambda d: ["convert", d / "missing_key.pth"], ("dec.conv_post.weight", "missing_key.pth")
    ),
    # convert: outputs
    "convert -o a folder": Case(
        lambda d: ["convert", d / "voice.pth", "-o", d / "folder.pth"], ("is a folder", "folder.pth")
    ),
    "convert -o the input": Case(
        lambda d: ["convert", d / "voice.pth", "-o", d / "voice.pth", "--force"], ("is the input", "voice.pth")
    ),
    "convert -o existing": Case(
        lambda d: ["convert", d / "voice.pth", "-o", d / "existing.safetensors"],
        ("exists", "--force", "existing.safetensors"),
    ),
    "convert -o under a file": Case(
        lambda d: ["convert", d / "voice.pth", "-o", d / "afile" / "v.safetensors"], ("not a folder", "afile")
    ),
    "convert -o read-only folder": Case(
        lambda d: ["convert", d / "voice.pth", "-o", d / "readonly" / "v.st"],
        ("not writable", "readonly"),
        skip_as_root=True,
    ),
    # infer: checkpoints in the wrong place, broken voices
    "infer hubert as --rmvpe": Case(
        lambda d: infer_argv(d, "--rmvpe", d / "hubert_base.pt"), ("hubert_base.pt", "the rmvpe.pt format")
    ),
    "infer rmvpe as --hubert": Case(lambda d: infer_argv(d, "--hubert", d / "rmvpe.pt"), ("rmvpe.pt", "HuBERT")),
    "infer --hubert folder without config.json": Case(
        lambda d: infer_argv(d, "--hubert", d / "no_config_hubert"), ("no_config_hubert", "folder without config.json")
    ),
    "infer --hubert folder of another size": Case(
        lambda d: infer_argv(d, "--hubert", d / "small_hubert"),
        ("small_hubert/config.json", "hidden_size = 64, expected 768"),
    ),
    "infer --rmvpe unknown safetensors": Case(
        lambda d: infer_argv(d, "--rmvpe", d / "odd.safetensors"),
        ("odd.safetensors", "missing key 'fc.0.gru.weight_hh_l0'"),
    ),
    "infer --rmvpe a converted voice": Case(
        lambda d: infer_argv(d, "--rmvpe", d / "bogus.safetensors"), ("bogus.safetensors", "converted 'synth' weights")
    ),
    "infer RefineGAN voice": Case(
        lambda d: infer_argv(d, voice="refinegan.pth"), ("refinegan.pth", "vocoder 'RefineGAN' is not supported")
    ),
    "convert unknown safetensors": Case(
        lambda d: ["convert", d / "odd.safetensors", "-o", d / "n.safetensors"],
        ("odd.safetensors", "unrecognised checkpoint"),
    ),
    "convert a converted file": Case(
        lambda d: ["convert", d / "bogus.safetensors", "-o", d / "n.safetensors"],
        ("bogus.safetensors", "already converted"),
    ),
    "infer rmvpe as the voice": Case(lambda d: infer_argv(d, voice="rmvpe.pt"), ("not an RVC voice model", "rmvpe.pt")),
    "infer NaN voice": Case(lambda d: infer_argv(d, voice="nan_voice.pth"), ("NaN", "nan_voice.pth")),
    "infer rate not the decoder's": Case(
        lambda d: infer_argv(d, voice="sr_voice.pth"), ("sample rate 1100", "sr_voice.pth")
    ),
    "infer voice that outputs silence": Case(
        lambda d: infer_argv(d, "--backend", "mlx", voice="silent_voice.pth"),
        ("gave silence", "silent_voice.pth", "o.wav not written"),
    ),
    "infer payload voice (mlx)": Case(
        lambda d: infer_argv(d, "--backend", "mlx", voice="evil.pth"), ("refusing to load global", "evil.pth")
    ),
    "infer bogus converted voice": Case(
        lambda d: infer_argv(d, "--backend", "mlx", voice="bogus.safetensors"), ("config", "bogus.safetensors")
    ),
    # infer: outputs
    "infer -o .mp3": Case(lambda d: infer_argv(d, out="o.mp3"), ("unsupported output format", "o.mp3")),
    "infer -o a folder": Case(lambda d: infer_argv(d, out="out.wav"), ("is a folder", "out.wav")),
    "infer -o the input": Case(lambda d: infer_argv(d, "--force", out="in.wav"), ("is the input", "in.wav")),
    "infer -o the voice": Case(lambda d: infer_argv(d, "--force", out="voice.pth"), ("is the input", "voice.pth")),
    "infer -o existing": Case(lambda d: infer_argv(d, out="existing.wav"), ("exists", "existing.wav")),
    "infer -o read-only folder": Case(
        lambda d: infer_argv(d, out="readonly/o.wav"), ("not writable", "readonly"), skip_as_root=True
    ),
    # infer: audio
    "infer one-LSB input": Case(lambda d: infer_argv(d, wav="quiet.wav"), ("silent", "quiet.wav")),
    "infer all-zero input": Case(lambda d: infer_argv(d, wav="zeros.wav"), ("silent", "zeros.wav")),
    "infer NaN input": Case(lambda d: infer_argv(d, wav="nan.wav"), ("NaN", "nan.wav")),
    "infer too short": Case(lambda d: infer_argv(d, wav="short.wav"), ("too short", "short.wav")),
    "infer empty wav": Case(lambda d: infer_argv(d, wav="empty.wav"), ("empty", "empty.wav")),
    "infer 9 channels": Case(lambda d: infer_argv(d, wav="nine_channels.wav"), ("9 channels", "nine_channels.wav")),
    "infer too short after resampling": Case(
        lambda d: infer_argv(d, wav="short_44k.wav"), ("too short", "short_44k.wav")
    ),
    "infer silent 48 kHz stereo": Case(lambda d: infer_argv(d, wav="zeros_48k.flac"), ("silent", "zeros_48k.flac")),
    "infer NaN in one channel": Case(lambda d: infer_argv(d, wav="nan_right.wav"), ("NaN", "nan_right.wav")),
    "infer text as wav": Case(lambda d: infer_argv(d, wav="text.wav"), ("unreadable audio", "text.wav")),
    # infer: options and the index
    "infer missing index, rate 0": Case(
        lambda d: infer_argv(d, "--index", d / "nope.index", "--index-rate", "0"), ("not found", "nope.index")
    ),
    "infer trained_ index": Case(
        lambda d: infer_argv(d, "--index", d / "trained_IVF4_Flat_nprobe_1_voice_v2.index"),
        ("holds no vectors", "added_IVF4_Flat_nprobe_1_voice_v2.index"),
    ),
    "infer garbage index": Case(lambda d: infer_argv(d, "--index", d / "garbage.index"), ("faiss", "garbage.index")),
    "infer sid out of range": Case(lambda d: infer_argv(d, "--sid", "5"), ("sid 5 is out of range",)),
    "infer negative sid": Case(lambda d: infer_argv(d, "--sid", "-1"), ("--sid", "at least 0")),
    "infer negative seed": Case(lambda d: infer_argv(d, "--seed", "-3"), ("--seed", "at least 0")),
    "infer negative tile frames": Case(lambda d: infer_argv(d, "--tile-frames", "-1"), ("--tile-frames", "at least 0")),
    "infer index-rate nan": Case(lambda d: infer_argv(d, "--index-rate", "nan"), ("index_rate",)),
    "infer f0-up-key 100": Case(lambda d: infer_argv(d, "--f0-up-key", "100"), ("f0_up_key",)),
    "infer seed and deterministic": Case(
        lambda d: infer_argv(d, "--seed", "1", "--deterministic"), ("--deterministic", "not allowed with", "--seed")
    ),
    "infer resample-sr 8000": Case(lambda d: infer_argv(d, "--resample-sr", "8000"), ("resample_sr", "8000")),
    "infer resample-sr text": Case(lambda d: infer_argv(d, "--resample-sr", "48k"), ("--resample-sr", "48k")),
    "infer without --hubert": Case(
        lambda d: ["infer", d / "voice.pth", d / "in.wav", "-o", d / "o.wav", *TINY], ("--hubert", "--synthetic-models")
    ),
    "infer pitch voice without --rmvpe": Case(
        lambda d: ["infer", d / "voice.pth", d / "in.wav", "-o", d / "o.wav", "--hubert", d / "hubert_base.pt", *TINY],
        ("voice.pth", "pitch model", "RMVPE"),
    ),
    "infer mlx gpu": Case(lambda d: infer_argv(d, "--backend", "mlx", "--mlx-device", "gpu"), ("gpu", "not available")),
    "infer cache is a file": Case(
        lambda d: infer_argv(d), ("RVC_BENCH_CACHE", "afile", "not a folder"), env={"RVC_BENCH_CACHE": "afile"}
    ),
    # report
    "report -o a folder": Case(
        lambda d: ["report", "--store", d / "store", "-o", d / "folder.pth"], ("is a folder", "folder.pth")
    ),
    "report -o existing": Case(
        lambda d: ["report", "--store", d / "store", "-o", d / "existing.md"], ("exists", "existing.md")
    ),
    "report -o under a file": Case(
        lambda d: ["report", "--store", d / "store", "-o", d / "afile" / "B.md"], ("not a folder", "afile")
    ),
    "report -o a store file": Case(
        lambda d: ["report", "--store", d / "store", "-o", next((d / "store").rglob("bench.parquet")), "--force"],
        ("is the input", "bench.parquet"),
    ),
    "report missing store": Case(
        lambda d: ["report", "--store", d / "nostore", "-o", d / "B.md"], ("not found", "nostore")
    ),
    "report empty store": Case(
        lambda d: ["report", "--store", d / "empty_store", "-o", d / "B.md"], ("no readable runs", "empty_store")
    ),
    # gate
    "gate max-slowdown 0.5": Case(
        lambda d: ["gate", "--store", d / "store", "--max-slowdown", "0.5"], ("--max-slowdown", "0.5")
    ),
    "gate max-slowdown nan": Case(
        lambda d: ["gate", "--store", d / "store", "--max-slowdown", "nan"], ("--max-slowdown", "nan")
    ),
    "gate max-slowdown -1": Case(
        lambda d: ["gate", "--store", d / "store", "--max-slowdown", "-1"], ("--max-slowdown", "-1")
    ),
    "gate corrupt newest run": Case(
        lambda d: ["gate", "--store", d / "store"], ("unreadable store file", "broken.parquet")
    ),
    "gate missing store": Case(lambda d: ["gate", "--store", d / "nostore"], ("no readable runs", "nostore")),
    # run: every option checked before a benchmark starts
    "run lengths 0.001": Case(lambda d: RUN(d, "--lengths", "0.001"), ("--lengths", "0.001")),
    "run lengths 1e-9": Case(lambda d: RUN(d, "--lengths", "1e-9"), ("--lengths", "1e-9")),
    "run lengths nan": Case(lambda d: RUN(d, "--lengths", "nan"), ("--lengths", "nan")),
    "run rounds -1": Case(lambda d: RUN(d, "--rounds", "-1"), ("--rounds", "at least 0")),
    "run rounds 0 with warm-up": Case(
        lambda d: RUN(d, "--rounds", "5,0", "--lengths", "5,60", "--warmup", "1"), ("--rounds", "0 warm-up")
    ),
    "run warmup -1": Case(lambda d: RUN(d, "--warmup", "-1"), ("--warmup", "at least 0")),
    "run mlx gpu": Case(lambda d: RUN(d, "--mlx-device", "gpu"), ("gpu", "not available")),
    "run torch tpu": Case(lambda d: RUN(d, "--torch-device", "tpu"), ("tpu",)),
    "run unknown backend": Case(lambda d: RUN(d, "--backends", "jax"), ("jax",)),
    "run missing weights dir": Case(lambda d: RUN(d, "--weights-dir", d / "nodir"), ("not a folder", "nodir")),
    "run weights dir without weights": Case(
        lambda d: RUN(d, "--weights-dir", d / "no_weights"), ("neither", "no_weights")
    ),
    "run voice as weights rmvpe.pt": Case(
        lambda d: RUN(d, "--weights-dir", d / "weights"), ("state dict of tensors", "rmvpe.pt")
    ),
    "run store is a file": Case(
        lambda d: RUN(d)[:7] + ["--store", d / "afile", "--report", d / "new.md"], ("--store", "afile", "not a folder")
    ),
    "run report is a folder": Case(
        lambda d: RUN(d)[:9] + ["--report", d / "folder.pth"], ("is a folder", "folder.pth")
    ),
    "run report exists": Case(lambda d: RUN(d)[:9] + ["--report", d / "existing.md"], ("exists", "existing.md")),
    "run cache is a file": Case(lambda d: RUN(d), ("RVC_BENCH_CACHE", "afile"), env={"RVC_BENCH_CACHE": "afile"}),
    "run store read-only": Case(
        lambda d: RUN(d)[:7] + ["--store", d / "readonly" / "s", "--report", d / "n.md"],
        ("not writable", "readonly"),
        skip_as_root=True,
    ),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    make_inputs(d)
    return d


def snapshot(root: Path) -> dict:
    return {
        p.relative_to(root): (
            p.is_dir(),
            p.stat().st_mode,
            None if p.is_dir() else (p.stat().st_mtime_ns, p.read_bytes()),
        )
        for p in root.rglob("*")
    }


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_clear_line(name, inputs, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    if case.skip_as_root and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    d = tmp_path / "case"
    shutil.copytree(inputs, d, symlinks=True)
    (d / "readonly").chmod(0o555)
    for var, rel in case.env.items():
        monkeypatch.setenv(var, str(d / rel))
    before = snapshot(d)
    try:
        code = cli.main([str(a) for a in case.argv(d)])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    last = err.splitlines()[-1] if err.strip() else ""
    assert code not in (0, None), err
    assert last.startswith("rvc-bench: error: ") and "Traceback" not in err, err
    for needle in case.needles:
        assert needle in last, (needle, last)
    assert snapshot(d) == before, "the case created or changed files"
    assert not (d / MARKER).exists()


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 40


def test_a_failing_write_is_one_line_too(inputs, tmp_path, monkeypatch, capsys):
    """The disk can still say no after every check passed (full, read-only mount): one line, the file, status 1."""

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(audio, "atomic_write_bytes", refuse)
    out = tmp_path / "o.wav"
    code = cli.main(
        ["infer", str(inputs / "voice.pth"), str(inputs / "in.wav"), "-o", str(out), "--backend", "mlx", *SYNTHETIC]
    )
    last = capsys.readouterr().err.splitlines()[-1]
    assert code == 1 and last == f"rvc-bench: error: {out}: Permission denied", last
    assert not out.exists()
