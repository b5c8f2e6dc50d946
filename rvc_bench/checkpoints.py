"""Safe checkpoint I/O: pickled torch files without running their code, safetensors, strict model loads."""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rvc_bench.fileio import atomic_write_bytes
from rvc_bench.layout import CheckpointError, check_shapes

# Classes that fairseq checkpoints (hubert_base.pt) pickle beside the weights: omegaconf configs with their nodes
# and metadata, argparse.Namespace, fairseq's Dictionary (task_state), and the type objects omegaconf records as
# annotations. Each is replaced by an inert stand-in registered under its real name, for our loads only.
_OMEGACONF_CONTAINERS = ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig")
_OMEGACONF_NODES = tuple(f"omegaconf.nodes.{n}Node" for n in ("Any", "String", "Integer", "Float", "Boolean", "Bytes"))
_OBJECTS = (
    "omegaconf.base.Metadata",
    "omegaconf.base.ContainerMetadata",
    "argparse.Namespace",
    "fairseq.data.dictionary.Dictionary",
)
_TYPES = ("typing.Any", "typing.Dict", "typing.List") + tuple(
    f"builtins.{t}" for t in ("dict", "list", "int", "float", "str", "bool", "bytes")
)
MAX_DEPTH = 64  # nesting a checkpoint may have (real ones: < 10); deeper is refused, not recursed into
_TENSOR_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


class _StandIn:
    """Inert stand-in for a class a checkpoint pickles: it keeps the arguments and state it is given, runs nothing.

    torch's weights_only unpickler makes it as it would the real class (NEWOBJ / REDUCE, then BUILD calls
    __setstate__). After the load, `data()` turns it into plain data, so no stand-in leaves load_pickled.
    """

    real_name = ""  # "module.Class" it stands in for

    def __new__(cls, *args):
        self = super().__new__(cls)
        self.args, self.state = args, None
        return self

    def __setstate__(self, state):
        self.state = state

    def data(self):
        """Plain objects (Namespace, Dictionary, metadata): their attributes."""
        return self.state if self.state is not None else list(self.args)


class _OmegaContainer(_StandIn):
    def data(self):  # DictConfig / ListConfig keep their items (nodes) under "_content"; "_parent" is a back link
        return self.state.get("_content") if isinstance(self.state, dict) else None


class _OmegaNode(_StandIn):
    def data(self):  # a leaf value, under "_val"
        return self.state.get("_val") if isinstance(self.state, dict) else None


class _DefaultDict(_StandIn):
    def data(self):  # omegaconf's resolver cache; the unpickler cannot fill a non-dict, so it is always empty
        return {}


def _stand_in(real_name: str, base: type) -> tuple[type, str]:
    cls = type(real_name.rpartition(".")[2], (base,), {"__module__": f"{__name__}.inert", "real_name": real_name})
    return cls, real_name


_STAND_INS = (
    [_stand_in(n, _OmegaContainer) for n in _OMEGACONF_CONTAINERS]
    + [_stand_in(n, _OmegaNode) for n in _OMEGACONF_NODES]
    + [_stand_in(n, _StandIn) for n in _OBJECTS + _TYPES]
    + [_stand_in("collections.defaultdict", _DefaultDict)]
)


def _check_tensor(t, where: str) -> None:
    """A dense CPU tensor of a plain dtype and nothing else: no subclass, attributes, hooks, sparse or quantized."""
    import torch

    if (
        type(t) not in (torch.Tensor, torch.nn.Parameter)
        or t.layout != torch.strided
        or t.device.type != "cpu"
        or t.is_quantized
        or t.is_nested
        or vars(t)
        or t._backward_hooks
    ):
        raise CheckpointError(f"{where}: not a plain dense CPU tensor ({type(t).__name__}, {t.layout})")
    if str(t.dtype).removeprefix("torch.") not in _TENSOR_DTYPES:
        raise CheckpointError(f"{where}: unsupported tensor dtype {t.dtype}")


def _plain(obj: Any, where: str) -> Any:
    """The loaded object as plain data: dicts, lists, tuples, scalars, strings and checked tensors.

    Stand-ins become their data, stand-in classes (type annotations) their real names. Shared objects are
    converted once; cycles, nesting deeper than MAX_DEPTH and any other type are refused, naming the position.
    """
    import torch

    done: dict[int, Any] = {}
    busy = object()

    def walk(x, at: str, depth: int):
        if isinstance(x, (str, bytes, int, float, complex, type(None), torch.dtype, torch.device)):
            return x
        if isinstance(x, torch.Tensor):
            _check_tensor(x, at)
            return x
        if isinstance(x, type) and issubclass(x, _StandIn):
            return x.real_name
        if done.get(id(x)) is busy:
            raise CheckpointError(f"{at}: refers to itself (a cyclic structure)")
        if id(x) in done:
            return done[id(x)]
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{at}: nested deeper than {MAX_DEPTH} levels")
        done[id(x)] = busy
        if isinstance(x, dict):  # dict, OrderedDict, Counter: dict.items, never an attribute set on the object
            out = OrderedDict() if isinstance(x, OrderedDict) else {}  # rmvpe.pt and voice files are OrderedDicts
            for k, v in dict.items(x):
                key = walk(k, f"{at} key", depth + 1)
                if not isinstance(key, (str, int, float, bool, type(None))):
                    raise CheckpointError(f"{at}: a {type(key).__name__} used as a key")
                out[key] = walk(v, f"{at}[{key!r}]", depth + 1)
        elif isinstance(x, (list, tuple, set, frozenset, bytearray)):
            items = [walk(v, f"{at}[{i}]", depth + 1) for i, v in enumerate(x)]
            out = bytes(x) if isinstance(x, bytearray) else items if isinstance(x, list) else tuple(items)
        elif isinstance(x, _StandIn):
            out = walk(x.data(), at, depth + 1)
        else:
            raise CheckpointError(f"{at}: unexpected {type(x).__module__}.{type(x).__qualname__} object")
        done[id(x)] = out
        return out

    return walk(obj, where, 0)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__


def _refusal(err: BaseException) -> str:
    """torch's weights_only error (several paragraphs of advice) -> the one fact that matters."""
    text = str(err)
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", text)
    if found:
        return f"refusing to load global {found.group(1)}: not a tensor or a known configuration type"
    found = re.search(r"Unsupported operand (\d+)", text)
    if found:
        op = next((o.name for o in pickletools.opcodes if o.code == chr(int(found.group(1)))), None)
        return (
            f"refusing to load it: pickle opcode {op} is not allowed"
            if op
            else f"not a readable torch checkpoint (byte {int(found.group(1)):#04x} is no pickle opcode)"
        )
    parts = [p.strip() for p in text.split("\n\n") if p.strip()]
    detail = next((p for p in reversed(parts) if not p.startswith(("Check the documentation", "Weights only"))), text)
    return f"refusing to load it: {_first_line(detail)}"


def load_pickled(path: str | os.PathLike) -> Any:
    """Load a torch.save file (zip or legacy) as plain data, without running any code it carries.

    torch's weights_only unpickler does the loading: tensors, containers, scalars, plus the inert stand-ins above
    for the configuration objects of fairseq checkpoints, registered for this call only. Any other global is
    refused by name. The result holds only plain data and checked tensors (see _plain).
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a torch checkpoint")
    try:
        with torch.serialization.safe_globals(_STAND_INS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice on protocols and storages means nothing to a user
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: {_refusal(err)}") from None
    except Exception as err:  # an untrusted file can fail anywhere in the reader: one line, naming the file
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(err).__name__}: {_first_line(err)})"
        ) from None
    return _plain(obj, str(path))


def to_numpy_state(state: Any, what: str = "state dict") -> dict[str, np.ndarray]:
    """A dict of torch tensors -> float32/int numpy arrays (fp16 voice weights are widened to fp32 here, once).

    Anything that is not a dict of tensors is an error naming the key (e.g. a hubert_base.pt given as rmvpe.pt).
    """
    import torch

    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: expected a dict of tensors, found {type(state).__name__}")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{what}: key {key!r} holds a {type(value).__name__}, not a tensor")
        out[key] = value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return out


def save_safetensors(
    path: str | os.PathLike, weights: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None
) -> None:
    """MLX weights plus a JSON config in the safetensors header metadata; written atomically."""
    from safetensors.numpy import save

    meta = {"rvc_bench": json.dumps(metadata or {}, sort_keys=True)}
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata=meta))


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    data = path.read_bytes()
    try:
        weights = load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        meta = json.loads((header.get("__metadata__") or {}).get("rvc_bench", "{}"))
    except Exception as err:  # an untrusted file can fail anywhere in the reader: one line, naming the file
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({type(err).__name__}: {_first_line(err)})"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its rvc_bench metadata is not a JSON object")
    return weights, meta


def config_from_metadata(from_dict, meta: Mapping[str, Any], path) -> Any:
    """A stage config from a converted file's metadata (`Config.from_dict`); a malformed one names the file."""
    try:
        return from_dict(meta["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: bad config in its rvc_bench metadata ({type(err).__name__}: {err})") from None


def load_torch_module(module, state: Mapping[str, np.ndarray], what: str):
    """Strict load into a torch module: every key consumed, every shape checked, errors name the key. Returns it."""
    import torch

    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_shapes(expected, state, what)
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return module


def load_mlx_module(module, weights: Mapping[str, np.ndarray], what: str):
    """Strict load into an MLX module (same checks as the torch side). Returns it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    expected = {k: tuple(v.shape) for k, v in tree_flatten(module.parameters())}
    check_shapes(expected, weights, what)
    module.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
    mx.eval(module.parameters())
    return module


def save_torch_checkpoint(path: str | os.PathLike, obj: Any) -> None:
    """torch.save, atomically (used by the synthetic checkpoint generators)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
