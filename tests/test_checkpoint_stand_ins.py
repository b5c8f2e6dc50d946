"""What a checkpoint may still hold once no code can run (tests/test_hostile_checkpoints.py): the allowed globals
build plain tensors and data only (no attributes, no cycles, no stand-in left registered), and a real fairseq-style
hubert_base.pt (omegaconf DictConfig `cfg`, argparse Namespace `args`, a fairseq Dictionary) loads as plain data
through the stand-ins, which stay inert even where a library of that name is importable."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import infer_synthetic

from rvc_bench import checkpoints
from rvc_bench.fixtures import cache_dir, generate
from rvc_bench.hubert import convert as hubert_convert
from rvc_bench.hubert import synthetic as hubert_synthetic
from rvc_bench.hubert.config import get_config
from rvc_bench.layout import CheckpointError
from rvc_bench.synth import synthetic as synth_synthetic

# ---------------------------------------------------------------------------------------------------------------
# What the allowed globals alone can build, and what must still come out as plain data


def test_tensors_that_carry_more_than_data_are_refused(tmp_path):
    p = torch.nn.Parameter(torch.ones(2))
    p.evil = "attribute set by the file"  # pickled through torch._utils._rebuild_parameter_with_state (allowed)
    cases = {
        "attributes": {"w": p},
        "sparse": {"w": torch.ones(2).to_sparse()},
        "complex": {"w": torch.ones(2, dtype=torch.complex64)},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / f"{name}.pt")
        with pytest.raises(CheckpointError, match=r"\['w'\]"):
            checkpoints.load_pickled(tmp_path / f"{name}.pt")


def test_cycles_and_deep_nesting_are_refused(tmp_path):
    loop: list = []
    loop.append(loop)
    torch.save({"x": loop}, tmp_path / "loop.pt")
    with pytest.raises(CheckpointError, match="cyclic"):
        checkpoints.load_pickled(tmp_path / "loop.pt")
    deep: list = []
    for _ in range(checkpoints.MAX_DEPTH + 5):
        deep = [deep]
    torch.save(deep, tmp_path / "deep.pt")
    with pytest.raises(CheckpointError, match="nested deeper"):
        checkpoints.load_pickled(tmp_path / "deep.pt")
    shared = [1, 2]
    torch.save({"a": shared, "b": shared}, tmp_path / "shared.pt")  # shared, not cyclic: fine
    assert checkpoints.load_pickled(tmp_path / "shared.pt") == {"a": [1, 2], "b": [1, 2]}


def test_no_stand_in_is_registered_outside_a_load(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "w.pt")
    checkpoints.load_pickled(tmp_path / "w.pt")
    registered = {
        name for entry in torch.serialization.get_safe_globals() if isinstance(entry, tuple) for name in entry[1:]
    }
    assert not registered & {name for _, name in checkpoints._STAND_INS}


# ---------------------------------------------------------------------------------------------------------------
# A fairseq hubert_base.pt as fairseq writes it: omegaconf DictConfig cfg, argparse Namespace args, Dictionary


def _fake_module(name: str, **classes) -> types.ModuleType:
    module = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
        setattr(module, cls_name, cls)
    return module


def _omegaconf_classes(monkeypatch) -> dict:
    """Classes under omegaconf's and fairseq's real names, pickled as those libraries do (state via __dict__):
    the test needs neither library installed."""
    made = {}
    for module, names in {
        "omegaconf.dictconfig": ["DictConfig"],
        "omegaconf.listconfig": ["ListConfig"],
        "omegaconf.nodes": ["AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode"],
        "omegaconf.base": ["Metadata", "ContainerMetadata"],
        "fairseq.data.dictionary": ["Dictionary"],
    }.items():
        classes = {n: type(n, (), {}) for n in names}
        monkeypatch.setitem(sys.modules, module, _fake_module(module, **classes))
        made.update(classes)
    for parent in ("omegaconf", "fairseq", "fairseq.data"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    return made


def _omegaconf(value, c, parent=None):
    """A DictConfig / ListConfig / node tree with the attributes omegaconf 2.x pickles (see __getstate__)."""
    import collections
    import typing

    def obj(cls, **state):
        o = cls.__new__(cls)
        o.__dict__.update(state)
        return o

    def metadata(cls, key, ref_type):
        return obj(
            cls,
            ref_type=ref_type,
            object_type=None,
            optional=True,
            key=key,
            flags={},
            resolver_cache=collections.defaultdict(dict),
        )

    def build(v, key, parent):
        if isinstance(v, dict):
            node = obj(c["DictConfig"], _metadata=metadata(c["ContainerMetadata"], key, typing.Any), _parent=parent)
            node._content = {k: build(x, k, node) for k, x in v.items()}
            return node
        if isinstance(v, list):
            node = obj(c["ListConfig"], _metadata=metadata(c["ContainerMetadata"], key, list), _parent=parent)
            node._content = [build(x, i, node) for i, x in enumerate(v)]
            return node
        kind = {bool: "BooleanNode", int: "IntegerNode", float: "FloatNode", str: "StringNode"}.get(type(v), "AnyNode")
        return obj(c[kind], _metadata=metadata(c["Metadata"], key, type(v)), _parent=parent, _val=v)

    return build(value, None, parent)


def write_fairseq_hubert(path: Path, monkeypatch, **model_cfg_changes) -> Path:
    """The tiny ContentVec `infer --model-size tiny` uses, saved as a fairseq hubert_base.pt."""
    cfg = get_config("tiny-768")
    sections = hubert_synthetic.fairseq_cfg(cfg)
    sections["model"].update(model_cfg_changes)
    classes = _omegaconf_classes(monkeypatch)
    dictionary = classes["Dictionary"].__new__(classes["Dictionary"])
    dictionary.__dict__.update(
        symbols=["<s>", "<pad>", "</s>", "<unk>", "0", "1"],
        count=[1] * 6,
        indices={"<s>": 0},
        bos_index=0,
        pad_index=1,
        eos_index=2,
        unk_index=3,
        nspecial=4,
    )
    state = {k: torch.from_numpy(v.astype(np.float16)) for k, v in hubert_synthetic.fairseq_state(cfg).items()}
    ckpt = {
        "model": state,
        "cfg": _omegaconf(sections, classes),
        "args": argparse.Namespace(arch="hubert", **sections["model"]),
        "task_state": {"dictionaries": [dictionary]},
        "optimizer_history": [],
        "extra_state": {},
    }
    torch.save(ckpt, path)
    monkeypatch.undo()  # the fake omegaconf/fairseq modules are gone before anything loads
    return path


def test_fairseq_hubert_with_omegaconf_cfg_loads_as_plain_data(tmp_path, monkeypatch, capsys):
    path = write_fairseq_hubert(tmp_path / "hubert_base.pt", monkeypatch)
    assert b"omegaconf.dictconfig" in _data_pkl(path) and b"fairseq.data.dictionary" in _data_pkl(path)
    obj = checkpoints.load_pickled(path)
    assert obj["cfg"]["model"]["encoder_layers"] == 1 and obj["cfg"]["task"]["labels"] == ["km"]
    assert obj["args"]["arch"] == "hubert" and obj["task_state"]["dictionaries"][0]["symbols"][4] == "0"
    _assert_plain(obj)
    tiny = get_config("tiny-768")
    state, cfg = hubert_convert.read(path, tiny)
    assert cfg == tiny and state["final_proj.weight"].dtype == np.float32
    assert hubert_convert.load_torch(path, config=tiny).cfg == tiny
    voice, wav, out = synth_synthetic.ensure_checkpoint(cache_dir(), "tiny"), tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(wav, generate(0.5, seed=3).audio, 16000, subtype="FLOAT")  # the whole conversion, through the CLI
    assert infer_synthetic(voice, wav, out, "mlx", "--hubert", path) == 0 and out.is_file(), capsys.readouterr().err
    # The cfg is read, not just survived: a cfg that contradicts the model is refused, naming the field.
    bad = write_fairseq_hubert(tmp_path / "heads.pt", monkeypatch, encoder_attention_heads=5)
    with pytest.raises(CheckpointError, match="encoder_attention_heads"):
        hubert_convert.read(bad, tiny)


def _data_pkl(path: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


def _assert_plain(obj) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) in (str, int, float, bool), k
            _assert_plain(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _assert_plain(v)
    else:
        assert type(obj) in (str, int, float, bool, type(None), torch.Tensor), type(obj)


def test_stand_ins_stay_inert_when_the_real_library_is_importable(tmp_path, monkeypatch):
    """Even with a module of that name importable (and its class able to run code), the stand-in is what loads."""
    marker = tmp_path / "PWNED"

    class DictConfig:
        def __setstate__(self, state):
            marker.touch()

    path = tmp_path / "cfg.pt"
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    monkeypatch.setitem(
        sys.modules, "omegaconf.dictconfig", _fake_module("omegaconf.dictconfig", DictConfig=DictConfig)
    )
    cfg = DictConfig.__new__(DictConfig)
    cfg.__dict__.update(_content={"a": 1}, _parent=None)
    torch.save({"cfg": cfg}, path)
    assert checkpoints.load_pickled(path) == {"cfg": {"a": 1}} and not marker.exists()
