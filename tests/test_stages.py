"""The stage registry: recognising upstream formats, and every stage loading through the same calls on either
backend (MLX also from the converted file the benchmarks use)."""

from __future__ import annotations

import numpy as np
import pytest

from rvc_bench import stages
from rvc_bench.backends import get_backend
from rvc_bench.fixtures import cache_dir, generate
from rvc_bench.layout import CheckpointError


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
    torch_model = stage.load(get_backend("torch", "cpu"), src, **opts)
    from_converted = stage.load(get_backend("mlx", "cpu"), mlx_file, **opts)
    from_upstream = stage.load(get_backend("mlx", "cpu"), src, **opts)
    assert type(torch_model).__module__ == f"rvc_bench.{name}.model_torch"
    assert type(from_converted).__module__ == type(from_upstream).__module__ == f"rvc_bench.{name}.model_mlx"
    onnx_file = stage.checkpoint_for("onnx", src, cache, **opts)  # exported once by a child process
    assert onnx_file.suffix == ".onnx" and onnx_file.parent == cache / "onnx"
    assert stage.checkpoint_for("onnx", onnx_file, cache) == onnx_file  # an .onnx is its own
    from_export = stage.load(get_backend("onnx", "cpu"), onnx_file, **opts)
    assert type(from_export).__module__ == type(stage.load(get_backend("onnx", "cpu"), src, **opts)).__module__ \
        == f"rvc_bench.{name}.model_onnx"
    if name == "rmvpe":  # same weights either way: bit-identical outputs
        import mlx.core as mx

        audio = mx.array(generate(0.5, seed=1).audio)
        np.testing.assert_array_equal(from_converted(audio)[0], from_upstream(audio)[0])


def test_the_pipeline_checkpoints_fit_together():
    hubert, rmvpe = stages.pipeline_checkpoints(cache_dir(), "tiny")
    assert hubert == stages.HUBERT.checkpoint(cache_dir(), "tiny-768")
    assert rmvpe == stages.RMVPE.checkpoint(cache_dir(), "tiny")
