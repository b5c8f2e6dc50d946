"""ONNX files: the export cache keyed by the source checkpoint, the child process that exports for a process that
must not import torch, and the contract check that loads upstream-layout files and refuses a mismatched .onnx by name.

No upstream .onnx can be downloaded here, so the upstream-layout files are made from our exports by renaming their
tensors, dropping our metadata and (synthesizer) rewiring the inputs to upstream's (ds, rnd, no sine_noise).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx_exports import backend, hubert_models, rmvpe_models, synth_inputs, synth_models, within_table

from rvc_bench import onnx_graph, parity, stages
from rvc_bench.fixtures import generate
from rvc_bench.layout import CheckpointError
from rvc_bench.onnx_graph import OnnxModelError

# ---- the export cache ---------------------------------------------------------------------------------------------


def test_export_cache_is_keyed_by_the_source_checkpoint(tmp_path):
    ckpt = tmp_path / "voice.pth"
    ckpt.write_bytes(b"weights one")
    calls = []

    def fake_export(path, meta):
        calls.append(meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"graph")

    first = onnx_graph.cached_export(tmp_path, "synth", "voice", ckpt, fake_export)
    assert onnx_graph.cached_export(tmp_path, "synth", "voice", ckpt, fake_export) == first and len(calls) == 1
    assert calls[0]["source_sha256"] == onnx_graph.source_sha256(ckpt)
    assert onnx_graph.export_path(tmp_path, "synth", "voice", ckpt) == first  # found without exporting
    ckpt.write_bytes(b"weights two")  # a changed checkpoint re-exports under a new key
    assert onnx_graph.cached_export(tmp_path, "synth", "voice", ckpt, fake_export) != first and len(calls) == 2


def test_exports_record_source_opset_and_exporter():
    ckpt, path, _ = rmvpe_models()
    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    assert meta["rvc_bench.stage"] == "rmvpe" and meta["rvc_bench.opset"] == str(onnx_graph.OPSET)
    assert meta["rvc_bench.source_sha256"] == onnx_graph.source_sha256(ckpt)
    assert meta["rvc_bench.torch"] == torch.__version__ and meta["rvc_bench.onnxscript"]


def test_a_missing_export_is_made_in_a_child_process_and_never_imports_torch_here(tmp_path):
    """What a benchmark process measuring ONNX Runtime relies on: loading through the registry from a cold cache
    exports in a child process (torch is imported there, not here)."""
    code = (
        "import sys; from rvc_bench.backends import get_backend; from rvc_bench.mel import model_onnx\n"
        f"mel = model_onnx.load(get_backend('onnx', 'cpu'), {str(tmp_path)!r})\n"
        "assert mel(__import__('numpy').zeros(16000, 'float32')).shape == (128, 101)\n"
        "print(sorted(m for m in ('torch', 'mlx', 'onnxruntime') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "['onnxruntime']"
    assert "exporting mel-log-mel-128-" in proc.stderr and len(list((tmp_path / "onnx").glob("*.onnx"))) == 1


def test_a_bad_checkpoint_fails_its_child_export_with_one_line(tmp_path):
    bad = tmp_path / "rmvpe.pt"
    torch.save({"something": torch.ones(1)}, bad)
    with pytest.raises(CheckpointError) as err:
        stages.RMVPE.checkpoint_for("onnx", bad, tmp_path)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert not (tmp_path / "onnx").exists() or not list((tmp_path / "onnx").glob("*.onnx"))


# ---- upstream-layout files ----------------------------------------------------------------------------------------


def _rename(model: onnx.ModelProto, names: dict) -> onnx.ModelProto:
    """Rename tensors everywhere and drop our metadata: a file as another exporter would have named it."""
    for node in model.graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for value in [*model.graph.input, *model.graph.output]:
        value.name = names.get(value.name, value.name)
    del model.metadata_props[:]
    return model


def test_upstream_layout_rmvpe_and_contentvec_load_by_position(tmp_path):
    from rvc_bench.hubert import model_onnx as hubert_onnx
    from rvc_bench.rmvpe import model_onnx as rmvpe_onnx
    from rvc_bench.rmvpe.config import preset

    _, path, _ = rmvpe_models()
    upstream = tmp_path / "rmvpe.onnx"
    onnx.save(_rename(onnx.load(path), {"mel": "input", "salience": "output"}), upstream)
    mel = np.random.default_rng(0).standard_normal((1, 128, 96)).astype(np.float32) - 4
    ours = rmvpe_onnx.E2E(path, backend())
    theirs = rmvpe_onnx.E2E(upstream, backend(), cfg=preset("tiny"))
    assert theirs.meta == {} and np.array_equal(theirs.mel2hidden(mel), ours.mel2hidden(mel))
    # One graph: the U-Net cannot run in chunks apart from the BiGRU; cutting the BiGRU per chunk is still possible.
    with pytest.raises(onnx_graph.OnnxModelError, match="this file is one graph: run it whole"):
        theirs.mel2hidden(mel, chunk_frames=32)
    assert theirs.mel2hidden(mel, chunk_frames=32, cut_gru=True).shape == (1, 96, 360)

    for version in ("v1", "v2"):
        path = hubert_models(version)[0]
        vec = tmp_path / f"vec-{version}.onnx"
        onnx.save(_rename(onnx.load(path), {"source": "feats", "features": "logits"}), vec)
        audio = generate(1, seed=3).audio[None]
        theirs = hubert_onnx.load(vec, backend(), config="tiny")
        assert theirs.version == version  # read from the feature width
        assert np.array_equal(
            theirs.features(audio, version), hubert_onnx.load(path, backend()).features(audio, version)
        )


def _as_upstream_synth(model: onnx.ModelProto, upp: int) -> onnx.ModelProto:
    """Our pitch-voice export rewired to upstream's inputs: ds for sid, rnd = 0.66666 eps (channels first), no
    sine_noise (here zeros made in the graph, where upstream draws noise, so that the result can be compared
    exactly)."""
    from rvc_bench.synth.config import PRIOR_NOISE_SCALE

    g = model.graph
    const = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))  # noqa
    nodes = [
        helper.make_node("Identity", ["ds"], ["sid"]),
        const("noise_scale", np.array(PRIOR_NOISE_SCALE, np.float32)),
        helper.make_node("Div", ["rnd", "noise_scale"], ["eps_first"]),
        helper.make_node("Transpose", ["eps_first"], ["eps"], perm=[0, 2, 1]),
        helper.make_node("Shape", ["pitchf"], ["frames_shape"]),
        const("upp", np.array([1, upp], np.int64)),
        helper.make_node("Mul", ["frames_shape", "upp"], ["noise_shape"]),
        helper.make_node(
            "ConstantOfShape", ["noise_shape"], ["sine_noise"], value=numpy_helper.from_array(np.zeros(1, np.float32))
        ),
    ]
    for node in reversed(nodes):
        g.node.insert(0, node)
    for value in g.input:
        if value.name == "eps":  # [1, frames, inter] -> upstream's [1, inter, frames]
            dims = value.type.tensor_type.shape.dim
            frames, inter = dims[1].dim_param, dims[2].dim_value
            dims[1].Clear(), dims[2].Clear()
            dims[1].dim_value, dims[2].dim_param = inter, frames
        value.name = {"sid": "ds", "eps": "rnd"}.get(value.name, value.name)
    g.input.remove(next(v for v in g.input if v.name == "sine_noise"))
    del model.metadata_props[:]
    return model


def test_upstream_layout_synthesizer_maps_ds_and_rnd(tmp_path):
    from rvc_bench.synth import model_onnx, model_torch

    path, twin = synth_models("v2-40k")
    upstream = tmp_path / "voice.onnx"
    onnx.save(_as_upstream_synth(onnx.load(path), twin.cfg.upp), upstream)
    with pytest.raises(OnnxModelError, match="carries no synthesizer config"):
        model_onnx.load(upstream, backend())
    model = model_onnx.load(upstream, backend(), cfg=twin.cfg)
    assert model.layout == "upstream" and not model.injects_sine_noise
    inputs = synth_inputs(twin.cfg, 1)
    audio = model_onnx.run(model, inputs)["audio"]
    silent = inputs.__class__(**{**inputs.__dict__, "sine_noise": np.zeros_like(inputs.sine_noise)})
    within_table("synth", parity.tensor_metrics(audio, model_torch.run(twin, silent)["audio"]))
    with pytest.raises(ValueError, match="draws its NSF noise inside the graph"):
        model.infer(
            inputs.phone[None],
            [inputs.frames],
            inputs.pitch[None],
            inputs.pitchf[None],
            sine_noise=inputs.sine_noise[None],
        )


# ---- mismatched files are refused by name -------------------------------------------------------------------------

_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def fake_onnx(path, inputs, outputs):
    """A loadable graph with the given (name, dtype, dims) inputs and outputs (each output a reshaped range whose
    length depends on the first input, so that ONNX Runtime reports the declared output shapes)."""
    const = lambda name, value: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))  # noqa
    nodes = [
        helper.make_node("Size", [inputs[0][0]], ["n"]),
        const("zero", np.array(0, np.int64)),
        const("one", np.array(1, np.int64)),
        helper.make_node("Range", ["zero", "n", "one"], ["range"]),
        helper.make_node("Cast", ["range"], ["values"], to=TensorProto.FLOAT),
    ]
    for name, _, dims in outputs:
        nodes += [
            const(f"{name}_shape", np.array([d if isinstance(d, int) else -1 for d in dims], np.int64)),
            helper.make_node("Reshape", ["values", f"{name}_shape"], [name]),
        ]
    info = lambda name, dtype, dims: helper.make_tensor_value_info(name, _TYPES[dtype], dims)  # noqa: E731
    graph = helper.make_graph(nodes, "fake", [info(*i) for i in inputs], [info(*o) for o in outputs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    return path


def refusal(load, path) -> str:
    with pytest.raises(OnnxModelError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_mismatched_files_are_refused_naming_the_mismatch(tmp_path):
    from rvc_bench.hubert import model_onnx as hubert_onnx
    from rvc_bench.rmvpe import model_onnx as rmvpe_onnx
    from rvc_bench.synth import model_onnx as synth_onnx

    rmvpe_e2e = lambda p: rmvpe_onnx.E2E(p, backend())  # noqa: E731
    hubert_load = lambda p: hubert_onnx.load(p, backend())  # noqa: E731
    salience = [("out", "float32", [1, "t", 360])]
    msg = refusal(rmvpe_e2e, fake_onnx(tmp_path / "a.onnx", [("x", "float32", [1, 80, "t"])], salience))
    assert "input 'x' axis 1 is 80, the runner needs mel float32[1, 128, frames]" in msg
    msg = refusal(rmvpe_e2e, fake_onnx(tmp_path / "b.onnx", [("x", "float32", [1, 128, 64])], salience))
    assert "axis 2 is fixed at 64, the runner needs it dynamic (frames)" in msg
    msg = refusal(
        rmvpe_e2e, fake_onnx(tmp_path / "c.onnx", [("x", "float32", [1, 128, "t"]), ("y", "float32", [1])], salience)
    )
    assert "2 inputs ('x', 'y'), the runner needs 1" in msg
    msg = refusal(
        hubert_load,
        fake_onnx(tmp_path / "d.onnx", [("wav", "float32", [1, 1, "n"])], [("feats", "float32", [1, "t", 512])]),
    )
    assert "cannot tell the RVC version" in msg
    msg = refusal(rmvpe_e2e, hubert_models("v2")[0])
    assert "an rvc-bench export of stage 'hubert', not 'rmvpe'" in msg

    cfg = synth_models("v2-40k")[1].cfg
    upstream = [
        ("phone", "float32", [1, "t", cfg.phone_channels]),
        ("phone_lengths", "int64", [1]),
        ("pitch", "int64", [1, "t"]),
        ("pitchf", "float32", [1, "t"]),
        ("ds", "int64", [1]),
        ("rnd", "float32", [1, cfg.inter_channels, "t"]),
    ]
    audio = [("audio", "float32", [1, 1, "n"])]
    load = lambda p: synth_onnx.load(p, backend(), cfg=cfg)  # noqa: E731
    fake_onnx(tmp_path / "ok.onnx", upstream, audio)
    assert load(tmp_path / "ok.onnx").layout == "upstream"
    msg = refusal(load, fake_onnx(tmp_path / "e.onnx", upstream[:4] + upstream[5:], audio))
    assert "no input 'ds'" in msg
    float_pitch = upstream[:2] + [("pitch", "float32", [1, "t"])] + upstream[3:]
    msg = refusal(load, fake_onnx(tmp_path / "f.onnx", float_pitch, audio))
    assert "input 'pitch' is float32, the runner needs pitch int64[1, frames]" in msg
    v1_phone = [("phone", "float32", [1, "t", 256])] + upstream[1:]
    assert "input 'phone' axis 2 is 256" in refusal(load, fake_onnx(tmp_path / "g.onnx", v1_phone, audio))

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert "not a loadable ONNX model" in refusal(rmvpe_e2e, tmp_path / "junk.onnx")
    assert "ONNX model not found" in refusal(rmvpe_e2e, tmp_path / "missing.onnx")


# ---- end to end through the CLI -----------------------------------------------------------------------------------
