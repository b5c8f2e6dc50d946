"""No checkpoint can run code: a corpus of pickle payloads, in every position, through every loading path.

Each payload would create a marker file if any of its code ran. Payloads are hand-assembled opcodes (what
`pickle.dumps` writes for a `__reduce__`, and what it cannot write: dotted STACK_GLOBAL names, calls chained on
call results), spliced into real checkpoints (zip `data.pkl`, legacy non-zip files) at the positions a loader
reads: the top level, a state dict, a fairseq `cfg`/`args`, a voice's `config`/`weight`, a dict key.
Every case goes through every entry point in LOADERS and CLI_PATHS and must end in a CheckpointError (or a
one-line CLI error, non-zero exit) with no marker. What must still load (a real fairseq-style hubert_base.pt):
tests/test_checkpoint_stand_ins.py.
"""

from __future__ import annotations

import argparse
import pickle
import struct
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from rvc_bench import checkpoints, cli, fixtures, stages
from rvc_bench.hubert import convert as hubert_convert
from rvc_bench.layout import CheckpointError
from rvc_bench.rmvpe import convert as rmvpe_convert
from rvc_bench.synth import convert as synth_convert
from rvc_bench.synth import synthetic as synth_synthetic

# ---------------------------------------------------------------------------------------------------------------
# Every way a checkpoint file enters the project: the Python loaders and the CLI. Keep this the only list.

LOADERS = {
    "checkpoints.load_pickled": checkpoints.load_pickled,
    "rmvpe read": rmvpe_convert.read,
    "rmvpe load_torch": rmvpe_convert.load_torch,
    "rmvpe load_mlx": rmvpe_convert.load_mlx,
    "hubert read": lambda p: hubert_convert.read(p, "tiny"),
    "hubert load_torch": lambda p: hubert_convert.load_torch(p, config="tiny"),
    "hubert load_mlx": lambda p: hubert_convert.load_mlx(p, config="tiny"),
    "voice read_voice": synth_convert.read_voice,
    "voice load_torch": synth_convert.load_torch,
    "voice load_mlx": synth_convert.load_mlx,
}

TINY = ["--model-size", "tiny"]
SYNTHETIC = [*TINY, "--synthetic-models"]  # infer: synthetic HuBERT/RMVPE where none is given


def _infer_given(flag: str, *backend: str):
    """argv: infer a good voice, F given as `flag` (--hubert, --rmvpe)."""
    return lambda f, w: ["infer", w.voice, w.wav, "-o", w.out(".wav"), flag, f, *backend, *SYNTHETIC]


def _run_weights(name: str):
    """argv: run with F as `name` in the --weights-dir."""
    return lambda f, w: [
        *("run", "--weights-dir", w.weights_dir(f, name), "--stages", "mel", *TINY),
        *("--store", w.out(""), "--report", w.out(".md")),
    ]


CLI_PATHS = {  # argv for a checkpoint file F, in a folder of good inputs W (see `world`)
    "convert": lambda f, w: ["convert", f, "-o", w.out(".safetensors")],
    "convert --kind rmvpe": lambda f, w: ["convert", f, "-o", w.out(".safetensors"), "--kind", "rmvpe"],
    "convert --kind hubert": lambda f, w: ["convert", f, "-o", w.out(".safetensors"), "--kind", "hubert"],
    "convert --kind synth": lambda f, w: ["convert", f, "-o", w.out(".safetensors"), "--kind", "synth"],
    "infer VOICE torch": lambda f, w: ["infer", f, w.wav, "-o", w.out(".wav"), *SYNTHETIC],
    "infer VOICE mlx": lambda f, w: ["infer", f, w.wav, "-o", w.out(".wav"), "--backend", "mlx", *SYNTHETIC],
    "infer --hubert torch": _infer_given("--hubert"),
    "infer --hubert mlx": _infer_given("--hubert", "--backend", "mlx"),
    "infer --rmvpe torch": _infer_given("--rmvpe"),
    "infer --rmvpe mlx": _infer_given("--rmvpe", "--backend", "mlx"),
    "run --weights-dir rmvpe.pt": _run_weights("rmvpe.pt"),
    "run --weights-dir hubert_base.pt": _run_weights("hubert_base.pt"),
}
# Paths that load a good voice (and more) before the checkpoint under test: ~0.3 s each, so they get every
# payload in one position; the others get every payload in every position.
BEHIND_A_VOICE = {"infer --hubert torch", "infer --hubert mlx", "infer --rmvpe torch", "infer --rmvpe mlx"}


def run_cli(argv, capsys) -> tuple[int, str]:
    """`rvc-bench ARGV` in this process: (exit status, stderr). An exception escaping main would be a traceback."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err


class World:
    """Good inputs for the paths that need them (a tiny voice, a 16 kHz wav) and fresh output names."""

    def __init__(self, root: Path):
        import soundfile as sf

        self.root = root
        self.voice = synth_synthetic.ensure_checkpoint(fixtures.cache_dir(), "tiny")
        stages.pipeline_checkpoints(fixtures.cache_dir(), "tiny")  # the default --hubert/--rmvpe, cached
        self.given = None  # the checkpoint file as the last CLI call named it
        self.wav = root / "in.wav"
        sf.write(self.wav, fixtures.generate(0.5, seed=3).audio, 16000, subtype="FLOAT")
        self.n = 0

    def out(self, suffix: str) -> Path:
        self.n += 1
        return self.root / "out" / f"o{self.n}{suffix}"

    def weights_dir(self, f: Path, name: str) -> Path:
        folder = self.root / f"weights{self.n}"
        self.n += 1
        folder.mkdir()
        self.given = folder / name
        self.given.write_bytes(Path(f).read_bytes())
        return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("world"))


# ---------------------------------------------------------------------------------------------------------------
# Payloads: protocol-2 opcodes that leave one object on the stack (and would create `marker` if run)


def _s(text: str) -> bytes:  # BINUNICODE
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _g(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _call(func: bytes, *args: bytes) -> bytes:  # func(*args): MARK args TUPLE REDUCE
    return func + b"(" + b"".join(args) + b"tR"


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def _py(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


class _RunsCode:  # the textbook payload, as pickle.dumps writes it
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (_touch(self.marker),)


def _inner_pickle(marker: Path) -> Path:
    """A plain pickle that runs code when loaded: what nested loaders would be pointed at."""
    path = marker.with_name(marker.name + ".inner.pkl")
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    return path


# name -> (opcodes for a marker path, pickle protocol of the file, whether an unsafe load creates the marker).
# Dotted names resolve attribute by attribute only in protocol 4 files; the numpy array gadgets corrupt memory
# rather than run a command, so they are never loaded unsafely here.
PAYLOADS = {
    "posix.system (textbook __reduce__)": (lambda m: _call(_g("posix", "system"), _s(_touch(m))), 2, True),
    "os.system": (lambda m: _call(_g("os", "system"), _s(_touch(m))), 2, True),
    "torch._utils._import_dotted_name('os.system')": (
        lambda m: _call(_call(_g("torch._utils", "_import_dotted_name"), _s("os.system")), _s(_touch(m))),
        2,
        True,
    ),
    "STACK_GLOBAL torch._tensor, torch.os.system": (
        lambda m: _s("torch._tensor") + _s("torch.os.system") + b"\x93" + _s(_touch(m)) + b"\x85R",
        4,
        True,
    ),
    "GLOBAL torch._tensor torch.os.system": (
        lambda m: _call(_g("torch._tensor", "torch.os.system"), _s(_touch(m))),
        4,
        True,
    ),
    "builtins.getattr(__import__('os'), 'system')": (
        lambda m: _call(
            _call(_g("builtins", "getattr"), _call(_g("builtins", "__import__"), _s("os")), _s("system")), _s(_touch(m))
        ),
        2,
        True,
    ),
    "builtins.eval": (lambda m: _call(_g("builtins", "eval"), _s(_py(m))), 2, True),
    "builtins.exec": (lambda m: _call(_g("builtins", "exec"), _s(_py(m))), 2, True),
    "__builtin__.eval (python 2 name)": (lambda m: _call(_g("__builtin__", "eval"), _s(_py(m))), 2, True),
    "importlib.import_module": (
        lambda m: _call(
            _call(_g("builtins", "getattr"), _call(_g("importlib", "import_module"), _s("os")), _s("system")),
            _s(_touch(m)),
        ),
        2,
        True,
    ),
    "subprocess.getoutput": (lambda m: _call(_g("subprocess", "getoutput"), _s(_touch(m))), 2, True),
    "pickle.loads of an embedded pickle": (
        lambda m: _call(
            _g("pickle", "loads"),
            _call(_g("_codecs", "encode"), _s(pickle.dumps(_RunsCode(m), 2).decode("latin1")), _s("latin1")),
        ),
        2,
        True,
    ),
    "torch.load(nested, None, pickle)": (
        lambda m: _call(_g("torch", "load"), _s(str(_inner_pickle(m))), b"N", _g("torch.serialization", "pickle")),
        2,
        True,
    ),
    "torch.serialization.load(nested, None, pickle)": (
        lambda m: _call(
            _g("torch.serialization", "load"), _s(str(_inner_pickle(m))), b"N", _g("torch.serialization", "pickle")
        ),
        2,
        True,
    ),
    "numpy.load(pickle, allow_pickle=True)": (
        lambda m: _call(_g("numpy", "load"), _s(str(_inner_pickle(m))), b"N", b"\x88"),
        2,
        True,
    ),
    "numpy.testing runstring": (
        lambda m: _call(_g("numpy.testing._private.utils", "runstring"), _s(_py(m)), b"}"),
        2,
        True,
    ),
    "numpy.core.multiarray._reconstruct": (
        lambda m: _call(_g("numpy.core.multiarray", "_reconstruct"), _g("numpy", "ndarray"), b"(K\x00t", _s("b")),
        2,
        False,
    ),
    "numpy._core.multiarray.scalar": (
        lambda m: _call(_g("numpy._core.multiarray", "scalar"), _call(_g("numpy", "dtype"), _s("O")), _s("AAAAAAAA")),
        2,
        False,
    ),
    "omegaconf DictConfig name, eval inside": (
        lambda m: (
            _g("omegaconf.dictconfig", "DictConfig")
            + b")\x81}"
            + _s("_content")
            + _call(_g("builtins", "eval"), _s(_py(m)))
            + b"sb"
        ),
        2,
        False,
    ),
}


class _Slot:
    """Placeholder for the payload in an ordinary object; the pickler writes the payload's opcodes in its place."""


class _SplicingPickler(pickle._Pickler):
    payload = b""

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Slot):
            self.write(self.payload)
            return
        super().save(obj, save_persistent_id)


def _voice_like(slot):
    cfg = synth_synthetic.make_checkpoint("v2-40k", "tiny")
    return {"weight": {**cfg["weight"], "emb_g.weight": slot} if slot else cfg["weight"], "config": cfg["config"]}


POSITIONS = {
    "top level": lambda s: s,
    "inside the state dict": lambda s: OrderedDict(w=torch.ones(2), x=s),
    "inside 'model'": lambda s: {"model": {"w": torch.ones(2), "x": s}, "cfg": {"model": {}}},
    "inside 'cfg'": lambda s: {"model": {"w": torch.ones(2)}, "cfg": {"model": {"_name": s}}},
    "inside 'args' (Namespace)": lambda s: {"model": {"w": torch.ones(2)}, "args": argparse.Namespace(arch=s)},
    "inside a voice's 'config'": lambda s: {"weight": {"emb_g.weight": torch.ones(3, 8)}, "config": [1, s, 3]},
    "inside a voice's 'weight'": lambda s: {"weight": {"emb_g.weight": s}, "config": list(range(18))},
    "as a dict key": lambda s: {"model": {s: torch.ones(1)}},
}
FORMATS = ("zip", "legacy")


def write_payload(path: Path, payload: str, marker: Path, position: str, fmt: str, protocol: int | None = None) -> Path:
    """torch.save of POSITIONS[position] with the payload's opcodes where the slot is: a real checkpoint file."""
    opcodes, default_protocol, _ = PAYLOADS[payload]
    protocol = protocol or default_protocol
    pickler = type("SplicingPickler", (_SplicingPickler,), {"payload": opcodes(marker)})
    module = types.SimpleNamespace(__name__="splicing_pickle", Pickler=pickler, dump=pickle.dump)
    torch.save(
        POSITIONS[position](_Slot()),
        path,
        pickle_module=module,
        pickle_protocol=protocol,
        _use_new_zipfile_serialization=fmt == "zip",
    )
    return path


@pytest.mark.parametrize("payload", [p for p, (_, _, runs) in PAYLOADS.items() if runs])
def test_the_payloads_are_real(payload, tmp_path):
    """The corpus only proves something if an unsafe load of its files does run the payload."""
    for fmt in FORMATS:
        marker = tmp_path / f"ran-{fmt}"
        path = write_payload(tmp_path / f"p-{fmt}.pt", payload, marker, "inside 'model'", fmt)
        try:
            torch.load(path, weights_only=False)
        except Exception:  # the code ran while loading; what it returned need not fit the rest of the file
            pass
        assert marker.exists(), fmt


CASES = [
    (p, pos, fmt)
    for p in PAYLOADS
    for pos in POSITIONS
    for fmt in FORMATS
    if fmt == "zip" or pos == "inside the state dict"
]


def assert_refused_everywhere(path: Path, marker: Path, paths, world, capsys) -> None:
    for name in paths:
        if name in LOADERS:
            with pytest.raises(CheckpointError, match=path.name):
                LOADERS[name](path)
        else:
            world.given = path
            code, err = run_cli(CLI_PATHS[name](path, world), capsys)
            last = err.splitlines()[-1]
            assert code not in (0, None) and last.startswith("rvc-bench: error:"), (name, err)
            assert str(world.given) in last and "Traceback" not in err, (name, err)
        assert not marker.exists(), name


@pytest.mark.parametrize("payload,position,fmt", CASES, ids=[" | ".join(c) for c in CASES])
def test_payload_runs_nowhere(payload, position, fmt, tmp_path, world, capsys):
    marker = tmp_path / "PWNED"
    path = write_payload(tmp_path / "evil.pt", payload, marker, position, fmt)
    assert_refused_everywhere(
        path, marker, [*LOADERS, *(p for p in CLI_PATHS if p not in BEHIND_A_VOICE)], world, capsys
    )


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_runs_nowhere_behind_a_voice(payload, tmp_path, world, capsys):
    marker = tmp_path / "PWNED"
    path = write_payload(tmp_path / "evil.pt", payload, marker, "inside 'model'", "zip")
    assert_refused_everywhere(path, marker, BEHIND_A_VOICE, world, capsys)


def test_refusals_name_the_global(tmp_path):
    expect = {
        "posix.system (textbook __reduce__)": "global posix.system",
        "torch._utils._import_dotted_name('os.system')": "global torch._utils._import_dotted_name",
        "GLOBAL torch._tensor torch.os.system": "global torch._tensor.torch.os.system",
        "STACK_GLOBAL torch._tensor, torch.os.system": "pickle opcode STACK_GLOBAL is not allowed",
        "numpy.load(pickle, allow_pickle=True)": "global numpy.load",
    }
    for payload, message in expect.items():  # protocol 2 here: a protocol 4 file is refused at its first FRAME
        path = write_payload(tmp_path / "evil.pt", payload, tmp_path / "m", "top level", "zip", protocol=2)
        with pytest.raises(CheckpointError) as err:
            checkpoints.load_pickled(path)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_raw_pickles_and_protocol_4_are_refused(tmp_path):
    marker = tmp_path / "PWNED"
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model": _RunsCode(marker)}, protocol=4))
    zipped = tmp_path / "p4.pt"
    torch.save({"w": torch.ones(1), "x": _RunsCode(marker)}, zipped, pickle_protocol=4)
    for path in (raw, zipped):
        for load in LOADERS.values():
            with pytest.raises(CheckpointError):
                load(path)
    assert not marker.exists()
