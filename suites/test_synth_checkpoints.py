"""Synthesizer checkpoints (spec §6): the synthetic voices are the real format and give non-trivial output;
reading is strict (both weight-norm key styles and fp16 read the same; broken checkpoints fail naming the problem);
Applio's metadata is kept; conversion round trip. Tolerances: see test_synth.py."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
from synth_twins import SNR_FULL_DB, f0_track, tiny_twins, tiny_voice

from rvc_bench import parity
from rvc_bench.fixtures import cache_dir
from rvc_bench.layout import CheckpointError
from rvc_bench.synth import convert, synthetic
from rvc_bench.synth.config import SynthConfig

# ---- synthetic checkpoints -------------------------------------------------------------------------------------


def test_synthetic_checkpoint_is_the_real_format(tmp_path):
    from rvc_bench.checkpoints import load_pickled

    path = synthetic.ensure_checkpoint(tmp_path, "tiny", seed=5, variant="v1-48k")
    mtime = path.stat().st_mtime_ns
    assert synthetic.ensure_checkpoint(tmp_path, "tiny", seed=5, variant="v1-48k") == path
    assert path.stat().st_mtime_ns == mtime  # cached, not rewritten
    ckpt = load_pickled(path)
    assert set(ckpt) == {"weight", "config", "info", "sr", "f0", "version"}
    assert (ckpt["sr"], ckpt["f0"], ckpt["version"], len(ckpt["config"])) == ("48k", 1, "v1", 18)
    weight = ckpt["weight"]
    assert not any(k.startswith("enc_q.") for k in weight)
    assert {str(v.dtype) for v in weight.values()} == {"torch.float16"}
    assert "dec.ups.0.weight_g" in weight and "dec.ups.0.weight_v" in weight and "dec.ups.0.weight" not in weight
    assert weight["dec.ups.0.weight_g"].shape[0] == weight["dec.ups.0.weight_v"].shape[0]  # per input channel
    other = load_pickled(synthetic.ensure_checkpoint(tmp_path, "tiny", seed=6, variant="v1-48k"))["weight"]
    assert not np.array_equal(weight["emb_g.weight"].numpy(), other["emb_g.weight"].numpy())
    with pytest.raises(ValueError, match="v3-40k"):
        synthetic.ensure_checkpoint(tmp_path, "tiny", variant="v3-40k")


@pytest.mark.parametrize("name", ["v2-40k", "v1-32k-nono"])
def test_synthetic_output_is_not_trivial(name):
    from rvc_bench.synth import model_torch

    tm, _ = tiny_twins(name)
    inputs = synthetic.make_inputs(tm.cfg, f0_track(60), seed=4)
    audio = model_torch.run(tm, inputs)["audio"]
    # speech-like level (measured std 0.05-0.19 across variants), final tanh not saturated
    assert 0.02 < audio.std() < 0.5 and np.mean(np.abs(audio) > 0.99) < 0.01
    changed = dataclasses.replace(inputs, phone=synthetic.smooth_features(60, tm.cfg.phone_channels, seed=99))
    assert parity.tensor_metrics(model_torch.run(tm, changed)["audio"], audio)["rel_l2"] > 0.1
    if tm.cfg.f0:  # the NSF source shapes the output (measured rel change 0.9 for f0 x 1.5)
        higher = dataclasses.replace(inputs, pitchf=inputs.pitchf * 1.5)
        assert parity.tensor_metrics(model_torch.run(tm, higher)["audio"], audio)["rel_l2"] > 0.3


# ---- reading and converting checkpoints ------------------------------------------------------------------------


def test_both_weight_norm_key_styles_and_fp16_read_the_same(tmp_path):
    from rvc_bench.checkpoints import save_torch_checkpoint

    legacy = synthetic.make_checkpoint("v2-48k", "tiny", seed=1)
    new = synthetic.make_checkpoint("v2-48k", "tiny", seed=1, wn_style="parametrizations")
    assert "dec.ups.1.parametrizations.weight.original0" in new["weight"]
    a, b = convert.read_voice_dict(legacy), convert.read_voice_dict(new)
    assert a.state.keys() == b.state.keys()
    for k in a.state:
        assert a.state[k].dtype == np.float32
        np.testing.assert_array_equal(a.state[k], b.state[k], err_msg=k)
    # folding is real: g * v / |v| with dim 0 reproduces a weight of norm g per output (ConvT: input) channel
    g = legacy["weight"]["dec.ups.1.weight_g"].float().numpy()
    w = a.state["dec.ups.1.weight"]
    np.testing.assert_allclose(np.sqrt((w.astype(np.float64) ** 2).sum(axis=(1, 2))), g[:, 0, 0], rtol=1e-5)
    # enc_q keys (training checkpoints keep them) are ignored like upstream's strict=False load
    legacy["weight"]["enc_q.pre.weight"] = legacy["weight"]["dec.conv_post.weight"].clone()
    save_torch_checkpoint(tmp_path / "with_enc_q.pth", legacy)
    assert convert.read_voice(tmp_path / "with_enc_q.pth").state.keys() == a.state.keys()


def _broken(mutate) -> dict:
    ckpt = synthetic.make_checkpoint("v2-40k", "tiny", seed=0)
    mutate(ckpt)
    return ckpt


@pytest.mark.parametrize(
    "mutate,message",
    [
        pytest.param(
            lambda c: c["weight"].pop("dec.conv_post.weight"), r"missing key 'dec\.conv_post\.weight'", id="missing-key"
        ),
        pytest.param(
            lambda c: c["weight"].pop("flow.flows.2.enc.in_layers.1.weight_v"),
            r"'flow\.flows\.2\.enc\.in_layers\.1\.weight_g' has no partner",
            id="missing-weight-norm-half",
        ),
        pytest.param(
            lambda c: c["weight"].__setitem__("enc_p.proj.bias", c["weight"]["enc_p.proj.bias"][:-1]),
            r"key 'enc_p\.proj\.bias' has shape \(31,\), expected \(32,\)",
            id="wrong-shape",
        ),
        pytest.param(
            lambda c: c["weight"].__setitem__("dec.extra.weight", c["weight"]["enc_p.proj.bias"]),
            r"unexpected key 'dec\.extra\.weight'",
            id="unexpected-key",
        ),
        pytest.param(
            lambda c: c.__setitem__("vocoder", "RefineGAN"), r"vocoder 'RefineGAN' is not supported", id="refinegan"
        ),
        pytest.param(
            lambda c: c.__setitem__("vocoder", "MRF HiFi-GAN"),
            r"vocoder 'MRF HiFi-GAN' is not supported",
            id="mrf-hifigan",
        ),
        pytest.param(
            lambda c: c.__setitem__("version", "v1"),
            r"key 'enc_p\.emb_phone\.weight' has shape \(16, 768\)",
            id="v2-weights-labelled-v1",
        ),
        pytest.param(
            lambda c: c.__setitem__("f0", 0),
            r"unexpected key 'dec\.m_source\.l_linear\.bias'",
            id="pitch-weights-labelled-nono",
        ),
        pytest.param(lambda c: c["config"].__setitem__(9, "2"), r"resblock '2'", id="resblock-2"),
        pytest.param(lambda c: c.pop("config"), r"not an RVC voice model", id="no-config"),
    ],
)
def test_bad_checkpoints_fail_naming_the_problem(tmp_path, mutate, message):
    from rvc_bench.checkpoints import save_torch_checkpoint

    path = tmp_path / "voice.pth"
    save_torch_checkpoint(path, _broken(mutate))
    with pytest.raises(CheckpointError, match=message):
        convert.read_voice(path)
    with pytest.raises(CheckpointError, match=message):
        convert.convert_file(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()  # nothing half-written


# The metadata Applio's extract_model adds to a voice .pth (spec §6), beside the classic keys.
APPLIO_METADATA = {
    "epoch": 300,
    "step": 12000,
    "creation_date": "2025-01-02T03:04:05.678901",
    "model_hash": "9f" * 32,
    "overtrain_info": "None",
    "dataset_length": 412,
    "model_name": "singer",
    "author": "someone",
    "embedder_model": "contentvec",
    "speakers_id": 0,
    "vocoder": "HiFi-GAN",
}


def test_applio_voice_loads_as_the_classic_one_and_keeps_its_metadata(tmp_path):
    from rvc_bench.checkpoints import save_torch_checkpoint

    classic = synthetic.make_checkpoint("v2-40k", "tiny", seed=0)
    save_torch_checkpoint(tmp_path / "classic.pth", classic)
    save_torch_checkpoint(tmp_path / "applio.pth", {**classic, **APPLIO_METADATA})
    a, b = convert.read_voice(tmp_path / "applio.pth"), convert.read_voice(tmp_path / "classic.pth")
    assert a.config == b.config and a.state.keys() == b.state.keys()
    assert all(np.array_equal(a.state[k], b.state[k]) for k in a.state)
    assert APPLIO_METADATA.items() <= a.meta.items()
    converted = convert.convert_file(tmp_path / "applio.pth", tmp_path / "applio.safetensors")
    for path in (tmp_path / "applio.pth", converted):  # read without building the model (infer's embedder check)
        meta = convert.read_metadata(path)
        assert meta["embedder_model"] == "contentvec" and meta["vocoder"] == "HiFi-GAN" and meta["epoch"] == 300
    assert "embedder_model" not in convert.read_metadata(tmp_path / "classic.pth")


def test_weight_norm_on_a_plain_module_is_refused():
    def split_conv_pre(c):
        w = c["weight"].pop("dec.conv_pre.weight")
        c["weight"]["dec.conv_pre.weight_g"] = w.float().norm(dim=(1, 2), keepdim=True).half()
        c["weight"]["dec.conv_pre.weight_v"] = w

    with pytest.raises(CheckpointError, match=r"'dec\.conv_pre', which upstream does not weight-normalise"):
        convert.read_voice_dict(_broken(split_conv_pre))


def test_pickled_code_is_never_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": {}, "config": [], "x": Evil()}, f, protocol=2)
    with pytest.raises((CheckpointError, pickle.UnpicklingError), match="print"):
        convert.read_voice(path)


@pytest.mark.parametrize("name", ["v1-32k", "v2-48k-nono"])
def test_convert_file_round_trip(tmp_path, name):
    from rvc_bench.checkpoints import load_safetensors
    from rvc_bench.synth import model_mlx

    src = synthetic.ensure_checkpoint(cache_dir(), "tiny", variant=name)
    dst = convert.convert_file(src, tmp_path / f"{name}.safetensors")
    meta = load_safetensors(dst)[1]
    assert SynthConfig.from_dict(meta["config"]) == tiny_voice(name).config
    assert (meta["stage"], meta["sr"], meta["version"]) == ("synth", name.split("-")[1], name.split("-")[0])
    reloaded = convert.load_mlx(dst)
    direct = tiny_twins(name)[1]
    inputs = synthetic.make_inputs(direct.cfg, f0_track(25), seed=8)
    a, b = model_mlx.run(reloaded, inputs), model_mlx.run(direct, inputs)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # same weights, same ops: bit-identical


def test_converted_file_with_a_missing_key_fails_naming_it(tmp_path):
    from rvc_bench.checkpoints import load_safetensors, save_safetensors

    dst = convert.convert_file(synthetic.ensure_checkpoint(cache_dir(), "tiny"), tmp_path / "a.safetensors")
    weights, meta = load_safetensors(dst)
    del weights["dec.ups.1.weight"]
    save_safetensors(tmp_path / "b.safetensors", weights, meta)
    with pytest.raises(CheckpointError, match=r"missing key 'dec\.ups\.1\.weight'"):
        convert.load_mlx(tmp_path / "b.safetensors")


@pytest.mark.full_size
def test_convert_file_round_trip_full_size(tmp_path):
    from rvc_bench.synth import model_mlx, model_torch

    src = synthetic.ensure_checkpoint(cache_dir(), "full")
    reloaded = convert.load_mlx(convert.convert_file(src, tmp_path / "v2-40k.safetensors"))
    inputs = synthetic.make_inputs(reloaded.cfg, f0_track(50), seed=9)
    out = model_mlx.run(reloaded, inputs)
    direct = model_mlx.run(convert.load_mlx(src), inputs)
    np.testing.assert_array_equal(out["audio"], direct["audio"])
    ref = model_torch.run(convert.load_torch(src), inputs)
    assert parity.tensor_metrics(out["audio"], ref["audio"])["snr_db"] >= SNR_FULL_DB
