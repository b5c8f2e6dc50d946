"""The stage registry: recognising upstream formats, every stage loading through the same calls on either backend
(MLX also from the converted file the benchmarks use), and every stage's runner taking numpy and giving time-major
numpy on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from rvc_bench import stages
from rvc_bench.backends import get_backend
from rvc_bench.fixtures import cache_dir, generate
from rvc_bench.layout import CheckpointError
from rvc_bench.synth import synthetic
from rvc_bench.synth.config import DEFAULT_VARIANT, preset

TINY_VOICE = preset(DEFAULT_VARIANT, "tiny")


def test_recognise_tells_the_upstream_formats_apart():
    assert stages.recognise({"weight": {}, "config": []}) is stages.SYNTH  # voice .pth
    assert stages.recognise({"unet.encoder.bn.weight": 0}) is stages.RMVPE  # rmvpe.pt: a bare state dict
    assert stages.recognise({"model": {"encoder.pos_conv.0.bias": 0}, "cfg": {}}) is stages.HUBERT  # fairseq
    assert stages.recognise({"encoder.pos_conv_embed.conv.bias": 0}) is stages.HUBERT  # HF names
    with pytest.raises(CheckpointError, match="unrecognised checkpoint"):
        stages.recognise({"something": 1})
    with pytest.raises(ValueError, match="unknown stage 'voice'"):
        stages.get("voice")


@pytest.mark.parametrize("name,opts", [("rmvpe", {}), ("hubert", {"config": "tiny"}), ("synth", {})])
def test_every_stage_loads_through_the_same_calls(name, opts):
    stage, cache = stages.get(name), cache_dir()
    src = stage.checkpoint(cache, "tiny")
    mlx_file = stage.checkpoint_for("mlx", src, cache, **opts)
    assert stage.checkpoint_for("torch", src, cache, **opts) == src and mlx_file.suffix == ".safetensors"
    mtime = mlx_file.stat().st_mtime_ns
    assert stage.checkpoint_for("mlx", src, cache, **opts) == mlx_file and mlx_file.stat().st_mtime_ns == mtime
    torch_model = stage.model(get_backend("torch", "cpu"), src, **opts)
    from_converted = stage.model(get_backend("mlx", "cpu"), mlx_file, **opts)
    from_upstream = stage.model(get_backend("mlx", "cpu"), src, **opts)
    assert type(torch_model).__module__ == f"rvc_bench.{name}.model_torch"
    assert type(from_converted).__module__ == type(from_upstream).__module__ == f"rvc_bench.{name}.model_mlx"
    onnx_file = stage.checkpoint_for("onnx", src, cache, **opts)  # exported once by a child process
    assert onnx_file.suffix == ".onnx" and onnx_file.parent == cache / "onnx"
    assert stage.checkpoint_for("onnx", onnx_file, cache) == onnx_file  # an .onnx is its own
    from_export = stage.model(get_backend("onnx", "cpu"), onnx_file, **opts)
    assert (
        type(from_export).__module__
        == type(stage.model(get_backend("onnx", "cpu"), src, **opts)).__module__
        == f"rvc_bench.{name}.model_onnx"
    )
    if name == "rmvpe":  # same weights either way: bit-identical outputs
        import mlx.core as mx

        audio = mx.array(generate(0.5, seed=1).audio)
        np.testing.assert_array_equal(from_converted(audio)[0], from_upstream(audio)[0])


def test_the_pipeline_checkpoints_fit_together():
    hubert, rmvpe = stages.pipeline_checkpoints(cache_dir(), "tiny")
    assert hubert == stages.HUBERT.checkpoint(cache_dir(), "tiny-768")
    assert rmvpe == stages.RMVPE.checkpoint(cache_dir(), "tiny")


def _stage_inputs(name: str, audio: np.ndarray) -> tuple:
    """Numpy inputs of each stage's runner: the synthesizer gets phone, pitch, pitchf, eps and sine noise of 20
    frames (no lengths, no speaker id), the others the audio."""
    if name == "synth":
        i = synthetic.make_inputs(TINY_VOICE, np.full(20, 200.0), seed=0)
        return i.phone[None], None, i.pitch[None], i.pitchf[None], None, i.eps[None], i.sine_noise[None]
    return (audio[None],) if name == "hubert" else (audio,)


# Time-major output shapes on 0.5 s of audio (8000 samples: 8000 // 160 + 1 frames of 10 ms; HuBERT (8000 - its
# 400-sample receptive field) // 320 + 1 of 20 ms) and on 20 frames of synthesis
EXPECTED_SHAPES = {
    "mel": [(51, 128)],
    "rmvpe": [(51, 360), (51,)],
    "hubert": [(1, 24, 768)],
    "synth": [(1, 20 * TINY_VOICE.upp, 1)],
}


@pytest.mark.parametrize("name,opts", [("mel", {}), ("rmvpe", {}), ("hubert", {"config": "tiny-768"}), ("synth", {})])
def test_every_stage_runs_numpy_in_time_major_out(name, opts):
    """Stage.load's runner on each backend: numpy in, the same time-major shapes out, the same numbers as the
    framework model called directly (its layout fixed by hand here), so that the boundary changes no value."""
    stage, audio = stages.get(name), generate(0.5, seed=1).audio
    src = None if name == "mel" else stage.checkpoint(cache_dir(), opts.get("config", "tiny"))
    for backend in ("torch", "mlx", "onnx"):
        runner = stage.load(get_backend(backend, "cpu"), src, **opts)
        out = runner(*_stage_inputs(name, audio))
        outs = list(out) if isinstance(out, tuple) else [out]
        assert [o.shape for o in outs] == EXPECTED_SHAPES[name], backend
        direct = runner.call(*runner.inputs(*_stage_inputs(name, audio)))
        direct = direct[0] if isinstance(direct, tuple) else np.asarray(runner.backend.to_numpy(direct))
        if backend != "mlx" and name in ("mel", "synth"):  # torch and ONNX Runtime put time last
            direct = np.swapaxes(direct, -1, -2)
        np.testing.assert_array_equal(outs[0], direct, err_msg=backend)


def test_twin_only_options_are_refused_by_the_onnx_loader():
    assert stages.SYNTH.takes("torch", "tile_frames") and not stages.SYNTH.takes("onnx", "tile_frames")
    assert stages.HUBERT.takes("onnx", "version") and not stages.HUBERT.takes("mlx", "version")
    with pytest.raises(ValueError, match="takes no tile_frames"):
        stages.SYNTH.model(get_backend("onnx", "cpu"), stages.SYNTH.checkpoint(cache_dir(), "tiny"), tile_frames=64)
