"""Bad input through the CLI, as a careless user or an attacker gives it: every case ends in one clear line.

For every case: a non-zero exit, a last stderr line `rvc-bench: error: ...` that names the problem and the file
(or option), no traceback, nothing in the case's folder created or altered, and no payload marker. Inputs are
generated on the fly with tiny models; the CLI runs in this process (`cli.main`), where an exception escaping it
is exactly what would have printed a traceback.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from rvc_bench import audio, cli, fixtures, retrieval, stages, store
from rvc_bench.hubert import synthetic as hubert_synthetic
from rvc_bench.synth import synthetic as synth_synthetic

MARKER = "PWNED"


@dataclass
class Case:
    argv: Callable[[Path], list]  # folder with the good inputs -> command line
    needles: tuple[str, ...]  # what the last stderr line must say (the problem; the file or option)
    env: dict[str, str] = field(default_factory=dict)  # {VAR: name of a file or folder in the case's folder}
    skip_as_root: bool = False  # permissions do not bind root


def _write_wav(path: Path, samples: np.ndarray, sr: int = 16000, subtype: str = "FLOAT") -> Path:
    import soundfile as sf

    sf.write(path, samples, sr, subtype=subtype)
    return path


def _voice(**changes) -> dict:
    ckpt = synth_synthetic.make_checkpoint("v2-40k", "tiny")
    for key, value in changes.items():
        if key in ("nan", "zero"):
            ckpt["weight"][value] = ckpt["weight"][value].clone().fill_(float("nan") if key == "nan" else 0)
        elif key == "config_sr":
            ckpt["config"][-1] = value
        else:
            ckpt[key] = value
    return ckpt


def make_inputs(d: Path) -> None:
    """The good inputs every case starts from, plus one bad file of each kind the cases name."""
    cache = fixtures.cache_dir()
    hubert, rmvpe = stages.pipeline_checkpoints(cache, "tiny")
    shutil.copy(synth_synthetic.ensure_checkpoint(cache, "tiny"), d / "voice.pth")
    shutil.copy(hubert, d / "hubert_base.pt")
    shutil.copy(rmvpe, d / "rmvpe.pt")
    clip = fixtures.generate(0.5, seed=4).audio
    _write_wav(d / "in.wav", clip)
    _write_wav(d / "quiet.wav", np.where(np.arange(clip.size) % 2, 1, -1).astype(np.float32) / 32768)
    _write_wav(d / "zeros.wav", np.zeros(clip.size, np.float32))
    _write_wav(d / "nan.wav", np.full(clip.size, np.nan, np.float32))
    _write_wav(d / "short.wav", clip[:800])
    _write_wav(d / "empty.wav", clip[:0])
    _write_wav(d / "nine_channels.wav", np.repeat(clip[:, None], 9, axis=1))
    _write_wav(d / "short_44k.wav", np.repeat(clip[:3900, None], 2, axis=1), sr=44100)  # 0.088 s: too short at 16 kHz
    _write_wav(d / "zeros_48k.flac", np.zeros((24000, 2), np.float32), sr=48000, subtype="PCM_16")
    _write_wav(
        d / "nan_right.wav", np.stack([clip, np.where(np.arange(clip.size) == 99, np.nan, clip)], axis=1), sr=22050
    )
    (d / "text.wav").write_text("not audio")
    (d / "empty.pth").write_bytes(b"")
    (d / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "truncated.pth").write_bytes((d / "voice.pth").read_bytes()[:3000])
    (d / "folder.pth").mkdir()
    (d / "afile").write_text("a file, not a folder")
    (d / "existing.safetensors").write_bytes(b"somebody's file")
    (d / "existing.wav").write_bytes(b"somebody's file")
    (d / "existing.md").write_text("somebody's notes")
    (d / "out.wav").mkdir()
    (d / "readonly").mkdir()
    torch.save(_voice(nan="dec.conv_post.weight"), d / "nan_voice.pth")
    torch.save(_voice(config_sr=1100), d / "sr_voice.pth")
    torch.save(_voice(zero="dec.conv_post.weight"), d / "silent_voice.pth")  # finite, but every output sample is 0
    torch.save(_voice(weight=[1, 2]), d / "list_weight.pth")
    torch.save({**_voice(), "config": [1, 2, 3]}, d / "short_config.pth")
    ckpt = _voice()
    del ckpt["weight"]["dec.conv_post.weight"]
    torch.save(ckpt, d / "missing_key.pth")
    torch.save({"something": torch.ones(1)}, d / "unknown.pth")
    torch.save(torch.ones(3), d / "tensor.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated; its files still exist
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), d / "script.pth")

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {d / MARKER}",)

    torch.save({"weight": {"emb_g.weight": RunsCode()}, "config": []}, d / "evil.pth")
    from rvc_bench.checkpoints import save_safetensors

    save_safetensors(d / "bogus.safetensors", {"x": np.ones(2, np.float32)}, {"stage": "synth", "config": [1, 2]})
    retrieval.write_index(d / "v2.index", retrieval.synthetic_vectors(200, 768, seed=1))
    trained = faiss.index_factory(768, "IVF4,Flat")  # what RVC's training writes before adding the vectors
    trained.train(retrieval.synthetic_vectors(200, 768, seed=1))
    faiss.write_index(trained, str(d / "trained_IVF4_Flat_nprobe_1_voice_v2.index"))
    (d / "garbage.index").write_bytes(b"\x00" * 64)
    run = store.Run(machine_id="m-1", meta={"machine": {}})
    run.add(
        stage="mel",
        variant="x",
        backend="mlx",
        device="cpu",
        device_name="cpu",
        dtype="float32",
        audio_seconds=1.0,
        metric="time_warm",
        value=0.1,
        unit="s",
    )
    run.flush(d / "store", "bench")
    newest = store.run_dir(d / "store", "m-1", "ffffffffffff")
    newest.mkdir(parents=True)
    (newest / "broken.parquet").write_bytes(b"PAR1 but not really")
    (d / "empty_store").mkdir()
    (d / "no_config_hubert").mkdir()
    hubert_synthetic.write_hf_folder(d / "small_hubert", "tiny", seed=0)  # 64 wide: not the pipeline's HuBERT
    save_file({"x": np.ones(2, np.float32)}, d / "odd.safetensors")
    torch.save({**_voice(), "vocoder": "RefineGAN", "embedder_model": "contentvec"}, d / "refinegan.pth")
    weights = d / "weights"
    weights.mkdir()
    shutil.copy(d / "voice.pth", weights / "rmvpe.pt")
    (d / "no_weights").mkdir()


TINY = ("--model-size", "tiny")
SYNTHETIC = (*TINY, "--synthetic-models")  # infer: synthetic HuBERT/RMVPE
INFER = lambda d, *rest: ["infer", d / "voice.pth", d / "in.wav", "-o", d / "o.wav", *SYNTHETIC, *rest]  # noqa: E731
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
        lambda d: INFER(d, "--rmvpe", d / "hubert_base.pt"), ("hubert_base.pt", "the rmvpe.pt format")
    ),
    "infer rmvpe as --hubert": Case(lambda d: INFER(d, "--hubert", d / "rmvpe.pt"), ("rmvpe.pt", "HuBERT")),
    "infer --hubert folder without config.json": Case(
        lambda d: INFER(d, "--hubert", d / "no_config_hubert"), ("no_config_hubert", "folder without config.json")
    ),
    "infer --hubert folder of another size": Case(
        lambda d: INFER(d, "--hubert", d / "small_hubert"),
        ("small_hubert/config.json", "hidden_size = 64, expected 768"),
    ),
    "infer --rmvpe unknown safetensors": Case(
        lambda d: INFER(d, "--rmvpe", d / "odd.safetensors"), ("odd.safetensors", "missing key 'fc.0.gru.weight_hh_l0'")
    ),
    "infer --rmvpe a converted voice": Case(
        lambda d: INFER(d, "--rmvpe", d / "bogus.safetensors"), ("bogus.safetensors", "converted 'synth' weights")
    ),
    "infer RefineGAN voice": Case(
        lambda d: ["infer", d / "refinegan.pth", d / "in.wav", "-o", d / "o.wav", *SYNTHETIC],
        ("refinegan.pth", "vocoder 'RefineGAN' is not supported"),
    ),
    "convert unknown safetensors": Case(
        lambda d: ["convert", d / "odd.safetensors", "-o", d / "n.safetensors"],
        ("odd.safetensors", "unrecognised checkpoint"),
    ),
    "convert a converted file": Case(
        lambda d: ["convert", d / "bogus.safetensors", "-o", d / "n.safetensors"],
        ("bogus.safetensors", "already converted"),
    ),
    "infer rmvpe as the voice": Case(
        lambda d: ["infer", d / "rmvpe.pt", d / "in.wav", "-o", d / "o.wav", *SYNTHETIC],
        ("not an RVC voice model", "rmvpe.pt"),
    ),
    "infer NaN voice": Case(
        lambda d: ["infer", d / "nan_voice.pth", d / "in.wav", "-o", d / "o.wav", *SYNTHETIC], ("NaN", "nan_voice.pth")
    ),
    "infer rate not the decoder's": Case(
        lambda d: ["infer", d / "sr_voice.pth", d / "in.wav", "-o", d / "o.wav", *SYNTHETIC],
        ("sample rate 1100", "sr_voice.pth"),
    ),
    "infer voice that outputs silence": Case(
        lambda d: ["infer", d / "silent_voice.pth", d / "in.wav", "-o", d / "o.wav", "--backend", "mlx", *SYNTHETIC],
        ("gave silence", "silent_voice.pth", "o.wav not written"),
    ),
    "infer payload voice (mlx)": Case(
        lambda d: ["infer", d / "evil.pth", d / "in.wav", "-o", d / "o.wav", "--backend", "mlx", *SYNTHETIC],
        ("refusing to load global", "evil.pth"),
    ),
    "infer bogus converted voice": Case(
        lambda d: ["infer", d / "bogus.safetensors", d / "in.wav", "-o", d / "o.wav", "--backend", "mlx", *SYNTHETIC],
        ("config", "bogus.safetensors"),
    ),
    # infer: outputs
    "infer -o .mp3": Case(lambda d: INFER(d)[:4] + [d / "o.mp3", *SYNTHETIC], ("unsupported output format", "o.mp3")),
    "infer -o a folder": Case(lambda d: INFER(d)[:4] + [d / "out.wav", *SYNTHETIC], ("is a folder", "out.wav")),
    "infer -o the input": Case(
        lambda d: INFER(d)[:4] + [d / "in.wav", "--force", *SYNTHETIC], ("is the input", "in.wav")
    ),
    "infer -o the voice": Case(
        lambda d: INFER(d)[:4] + [d / "voice.pth", "--force", *SYNTHETIC], ("is the input", "voice.pth")
    ),
    "infer -o existing": Case(lambda d: INFER(d)[:4] + [d / "existing.wav", *SYNTHETIC], ("exists", "existing.wav")),
    "infer -o read-only folder": Case(
        lambda d: INFER(d)[:4] + [d / "readonly" / "o.wav", *SYNTHETIC], ("not writable", "readonly"), skip_as_root=True
    ),
    # infer: audio
    "infer one-LSB input": Case(
        lambda d: ["infer", d / "voice.pth", d / "quiet.wav", "-o", d / "o.wav", *SYNTHETIC], ("silent", "quiet.wav")
    ),
    "infer all-zero input": Case(
        lambda d: ["infer", d / "voice.pth", d / "zeros.wav", "-o", d / "o.wav", *SYNTHETIC], ("silent", "zeros.wav")
    ),
    "infer NaN input": Case(
        lambda d: ["infer", d / "voice.pth", d / "nan.wav", "-o", d / "o.wav", *SYNTHETIC], ("NaN", "nan.wav")
    ),
    "infer too short": Case(
        lambda d: ["infer", d / "voice.pth", d / "short.wav", "-o", d / "o.wav", *SYNTHETIC], ("too short", "short.wav")
    ),
    "infer empty wav": Case(
        lambda d: ["infer", d / "voice.pth", d / "empty.wav", "-o", d / "o.wav", *SYNTHETIC], ("empty", "empty.wav")
    ),
    "infer 9 channels": Case(
        lambda d: ["infer", d / "voice.pth", d / "nine_channels.wav", "-o", d / "o.wav", *SYNTHETIC],
        ("9 channels", "nine_channels.wav"),
    ),
    "infer too short after resampling": Case(
        lambda d: ["infer", d / "voice.pth", d / "short_44k.wav", "-o", d / "o.wav", *SYNTHETIC],
        ("too short", "short_44k.wav"),
    ),
    "infer silent 48 kHz stereo": Case(
        lambda d: ["infer", d / "voice.pth", d / "zeros_48k.flac", "-o", d / "o.wav", *SYNTHETIC],
        ("silent", "zeros_48k.flac"),
    ),
    "infer NaN in one channel": Case(
        lambda d: ["infer", d / "voice.pth", d / "nan_right.wav", "-o", d / "o.wav", *SYNTHETIC],
        ("NaN", "nan_right.wav"),
    ),
    "infer text as wav": Case(
        lambda d: ["infer", d / "voice.pth", d / "text.wav", "-o", d / "o.wav", *SYNTHETIC],
        ("unreadable audio", "text.wav"),
    ),
    # infer: options and the index
    "infer missing index, rate 0": Case(
        lambda d: INFER(d, "--index", d / "nope.index", "--index-rate", "0"), ("not found", "nope.index")
    ),
    "infer trained_ index": Case(
        lambda d: INFER(d, "--index", d / "trained_IVF4_Flat_nprobe_1_voice_v2.index"),
        ("holds no vectors", "added_IVF4_Flat_nprobe_1_voice_v2.index"),
    ),
    "infer garbage index": Case(lambda d: INFER(d, "--index", d / "garbage.index"), ("faiss", "garbage.index")),
    "infer sid out of range": Case(lambda d: INFER(d, "--sid", "5"), ("sid 5 is out of range",)),
    "infer negative sid": Case(lambda d: INFER(d, "--sid", "-1"), ("--sid", "at least 0")),
    "infer negative seed": Case(lambda d: INFER(d, "--seed", "-3"), ("--seed", "at least 0")),
    "infer negative tile frames": Case(lambda d: INFER(d, "--tile-frames", "-1"), ("--tile-frames", "at least 0")),
    "infer index-rate nan": Case(lambda d: INFER(d, "--index-rate", "nan"), ("index_rate",)),
    "infer f0-up-key 100": Case(lambda d: INFER(d, "--f0-up-key", "100"), ("f0_up_key",)),
    "infer seed and deterministic": Case(
        lambda d: INFER(d, "--seed", "1", "--deterministic"), ("--deterministic", "not allowed with", "--seed")
    ),
    "infer resample-sr 8000": Case(lambda d: INFER(d, "--resample-sr", "8000"), ("resample_sr", "8000")),
    "infer resample-sr text": Case(lambda d: INFER(d, "--resample-sr", "48k"), ("--resample-sr", "48k")),
    "infer without --hubert": Case(
        lambda d: ["infer", d / "voice.pth", d / "in.wav", "-o", d / "o.wav", *TINY], ("--hubert", "--synthetic-models")
    ),
    "infer pitch voice without --rmvpe": Case(
        lambda d: ["infer", d / "voice.pth", d / "in.wav", "-o", d / "o.wav", "--hubert", d / "hubert_base.pt", *TINY],
        ("voice.pth", "pitch model", "RMVPE"),
    ),
    "infer mlx gpu": Case(lambda d: INFER(d, "--backend", "mlx", "--mlx-device", "gpu"), ("gpu", "not available")),
    "infer cache is a file": Case(
        lambda d: INFER(d), ("RVC_BENCH_CACHE", "afile", "not a folder"), env={"RVC_BENCH_CACHE": "afile"}
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
