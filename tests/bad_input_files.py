"""The input folder of tests/test_bad_inputs.py: the good inputs every case starts from (tiny models), plus one bad
file of each kind the cases name."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import faiss
import numpy as np
import torch
from helpers import add_row
from safetensors.numpy import save_file

from rvc_bench import fixtures, retrieval, stages, store
from rvc_bench.hubert import synthetic as hubert_synthetic
from rvc_bench.synth import synthetic as synth_synthetic

MARKER = "PWNED"  # the file a payload would create


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
    add_row(run, stage="mel", variant="x", backend="mlx", audio_seconds=1.0, metric="time_warm", value=0.1)
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
