"""RMVPE checkpoints: the full architecture matches the released checkpoint, configs and presets, the synthetic
checkpoint is the real format and exercises decoding; loading is strict and safe (renamed, wrong-shape, missing and
extra keys named; pickled code refused; safetensors of rmvpe.pt keys load alike); conversion round trip."""

from __future__ import annotations

import io
import pickle

import mlx.core as mx
import numpy as np
import pytest
import torch
from rmvpe_twins import checkpoint, mlx_model, net_torch, torch_log_mel

from rvc_bench.checkpoints import load_pickled, load_safetensors, save_torch_checkpoint
from rvc_bench.fixtures import generate
from rvc_bench.layout import CheckpointError
from rvc_bench.rmvpe import config as rconfig
from rvc_bench.rmvpe import convert, model_torch, synthetic
from rvc_bench.rmvpe.config import THRESHOLD, RMVPEConfig, preset

# ---------------------------------------------------------------------------------------------------------------
# Configuration, architecture and the checkpoint format


def test_full_architecture_matches_the_released_checkpoint():
    with torch.device("meta"):
        model = model_torch.E2E(preset("full"))
    state = model.state_dict()
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 90.42e6) < 0.01e6  # spec §9: 90.42 M, Intermediate ~74.5 M, BiGRU 0.99 M
    assert abs(sum(p.numel() for p in model.unet.intermediate.parameters()) - 74.5e6) < 0.05e6
    # Key names and shapes from spec §6.
    assert state["cnn.weight"].shape == (3, 16, 3, 3) and state["fc.1.weight"].shape == (360, 512)
    assert state["fc.0.gru.weight_ih_l0"].shape == (768, 384) and state["fc.0.gru.weight_hh_l0_reverse"].shape == (
        768,
        256,
    )
    assert state["unet.decoder.layers.0.conv1.0.weight"].shape == (512, 256, 3, 3)  # ConvT: [in, out, kh, kw]
    assert "unet.encoder.layers.4.conv.0.shortcut.bias" in state
    assert "unet.intermediate.layers.3.conv.3.conv.4.num_batches_tracked" in state
    assert rconfig.infer_config(state) == preset("full")


def test_config_from_dict_and_presets():
    full = preset("full")
    assert RMVPEConfig.from_dict({**full.to_dict(), "unknown": 1}) == full
    assert preset("tiny").default_overlap == 64 and full.default_overlap == 1600  # receptive fields 59, 1583
    with pytest.raises(ValueError):
        preset("huge")
    with pytest.raises(ValueError):
        RMVPEConfig(en_de_layers=6)  # would pool T by 64, more than the 32-frame padding
    assert rconfig.chunk_windows(100, 32, 32)[1] == (0, 96, 32, 64)
    with pytest.raises(ValueError):
        rconfig.chunk_windows(100, 48, 0)  # chunk starts off the pooling grid


def test_synthetic_checkpoint_is_the_real_format_and_deterministic():
    path = checkpoint("tiny")
    state = load_pickled(path)
    assert type(state).__name__ == "OrderedDict" and all(isinstance(v, torch.Tensor) for v in state.values())
    with torch.device("meta"):
        expected = model_torch.E2E(preset("tiny")).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    # Non-trivial BatchNorm statistics: a backend that ignored them (or ran in training mode) would fail parity.
    means = torch.cat([v for k, v in state.items() if k.endswith("running_mean")])
    variances = torch.cat([v for k, v in state.items() if k.endswith("running_var")])
    assert means.abs().max() > 0.05 and (variances - 1).abs().max() > 0.1
    assert all(int(v) > 0 for k, v in state.items() if k.endswith("num_batches_tracked"))
    # Seeded: two builds in one process are bitwise equal. (Not compared with the cached file: its calibration
    # pass ran through torch's BLAS, and e.g. LD_PRELOAD=libopenblas changes torch's last bits.)
    first, again = synthetic.build_state(preset("tiny"), seed=0), synthetic.build_state(preset("tiny"), seed=0)
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = synthetic.build_state(preset("tiny"), seed=1)
    assert not torch.equal(first["fc.1.weight"], other["fc.1.weight"])


def test_synthetic_salience_exercises_voiced_and_unvoiced_decoding():
    sal = net_torch("tiny", torch_log_mel(generate(5.0, seed=0).audio))
    peak = sal.max(axis=1)
    assert 0.2 < np.mean(peak > THRESHOLD) < 0.8
    assert len(np.unique(sal[peak > THRESHOLD].argmax(axis=1))) >= 20  # peaks at many different bins


# ---------------------------------------------------------------------------------------------------------------
# Strict, safe loading


@pytest.fixture(scope="module")
def tiny_state():
    return load_pickled(checkpoint("tiny"))


def _write(tmp_path, state, name="rmvpe.pt"):
    path = tmp_path / name
    save_torch_checkpoint(path, state)
    return path


def _both_loaders(path):
    """Each way a checkpoint enters the project; every one must fail the same way."""
    yield lambda: convert.load_torch(path)
    yield lambda: convert.load_mlx(path)
    yield lambda: convert.convert_file(path, path.with_suffix(".safetensors"))


def test_renamed_key_fails_naming_it(tmp_path, tiny_state):
    key = "unet.encoder.layers.1.conv.0.conv.1.running_var"
    state = dict(tiny_state)
    state["unet.encoder.layers.1.conv.0.conv.1.running_variance"] = state.pop(key)
    path = _write(tmp_path, state)
    for load in _both_loaders(path):
        with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
            load()
    assert not path.with_suffix(".safetensors").exists()  # nothing written on failure


def test_wrong_shape_missing_and_extra_keys_fail_naming_them(tmp_path, tiny_state):
    cases = {
        "unet.decoder.layers.0.conv1.0.weight": lambda s, k: s.__setitem__(k, s[k].transpose(0, 1).contiguous()),
        "unet.encoder.bn.num_batches_tracked": lambda s, k: s.pop(k),  # consumed explicitly: missing is an error
        "fc.0.gru.bias_hh_l0_reverse": lambda s, k: s.pop(k),
        "fc.2.weight": lambda s, k: s.__setitem__(k, torch.zeros(3)),  # extra
    }
    for key, damage in cases.items():
        state = dict(tiny_state)
        damage(state, key)
        path = _write(tmp_path, state)
        for load in _both_loaders(path):
            with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
                load()


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    buf = io.BytesIO()
    torch.save({"cnn.weight": torch.zeros(1), "payload": Evil()}, buf)
    path = tmp_path / "evil.pt"
    path.write_bytes(buf.getvalue())
    with pytest.raises((CheckpointError, pickle.UnpicklingError)):
        convert.read(path)


def test_convert_file_round_trip(tmp_path):
    dst = convert.convert_file(checkpoint("tiny"), tmp_path / "rmvpe.safetensors")
    weights, meta = load_safetensors(dst)
    assert RMVPEConfig.from_dict(meta["config"]) == preset("tiny")
    assert not any("num_batches_tracked" in k for k in weights)
    assert weights["fc.0.gru.l0_reverse.bhn"].shape == (16,)
    mel = torch_log_mel(generate(1.0, seed=5).audio)
    from_file = convert.load_mlx(dst).model
    x = mx.array(mel.numpy().transpose(0, 2, 1))
    np.testing.assert_array_equal(np.array(from_file.mel2hidden(x)), np.array(mlx_model("tiny").mel2hidden(x)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rmvpe_keys_in_a_safetensors_load_like_rmvpe_pt(tmp_path, tiny_state, dtype):
    """The same state dict as rmvpe.pt, saved with safetensors (as forks ship it, fp32 or fp16): the same model on
    both backends, the same converted file, and the same strict key check."""
    from safetensors.torch import save_file

    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tiny_state.items()}
    save_file(state, tmp_path / "rmvpe.safetensors", metadata={"format": "pt"})
    pt = _write(tmp_path, state)
    mel = torch_log_mel(generate(1.0, seed=5).audio)
    x = mx.array(mel.numpy().transpose(0, 2, 1))
    with torch.inference_mode():
        assert torch.equal(
            convert.load_torch(tmp_path / "rmvpe.safetensors").model.mel2hidden(mel),
            convert.load_torch(pt).model.mel2hidden(mel),
        )
    np.testing.assert_array_equal(
        np.array(convert.load_mlx(tmp_path / "rmvpe.safetensors").model.mel2hidden(x)),
        np.array(convert.load_mlx(pt).model.mel2hidden(x)),
    )
    a = load_safetensors(convert.convert_file(tmp_path / "rmvpe.safetensors", tmp_path / "a.safetensors"))[0]
    b = load_safetensors(convert.convert_file(pt, tmp_path / "b.safetensors"))[0]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    del state["fc.0.gru.bias_hh_l0_reverse"]
    save_file(state, tmp_path / "broken.safetensors")
    for load in _both_loaders(tmp_path / "broken.safetensors"):
        with pytest.raises(CheckpointError, match=r"broken.safetensors: missing key 'fc.0.gru.bias_hh_l0_reverse'"):
            load()
    with pytest.raises(CheckpointError, match="converted 'rmvpe' weights in MLX layout.*only the MLX backend"):
        convert.load_torch(tmp_path / "a.safetensors")  # ours: for the MLX twin only


def test_every_key_has_exactly_one_conversion_rule():
    for size in ("tiny", "full"):
        for key in convert.expected_torch_shapes(preset(size)):
            rules = [rule for pattern, rule in convert._NAME_TABLE if pattern.search(key)]
            assert len(rules) == 1, (key, rules)  # the table is unambiguous: its order does not matter
