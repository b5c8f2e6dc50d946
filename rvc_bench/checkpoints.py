"""Safe checkpoint I/O: pickled torch files without running their code, safetensors, strict model loads."""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvc_bench.layout import CheckpointError, check_shapes

# Globals a tensor-only unpickler may resolve: torch's own rebuild helpers and plain containers.
_TENSOR_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
} | {("torch", f"{t}Storage") for t in ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Short", "Char", "Byte", "Bool")}

# Configuration objects that fairseq checkpoints pickle beside the weights. They are replaced by inert
# placeholders: their data is kept as plain dicts, their code is never imported or run.
_CONFIG_MODULES = ("argparse", "omegaconf", "fairseq", "enum", "typing", "pathlib", "builtins.dict")
_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool", "slice", "complex"}


class _Inert:
    """Stands in for a pickled configuration class; records its state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return _Inert(*args, **kwargs)

    def __setitem__(self, key, value):  # dict-like configs are rebuilt with SETITEMS
        self.kwargs[key] = value

    def append(self, value):
        self.args = (*self.args, value)

    def extend(self, values):
        self.args = (*self.args, *values)


def _inert_class(module: str, name: str) -> type:
    return type(name, (_Inert,), {"__module__": f"inert.{module}"})


class _TensorOnlyUnpickler(pickle.Unpickler):
    """An allowlist unpickler: tensors and containers load; known config classes become inert; anything else fails."""

    def find_class(self, module: str, name: str):
        if (module, name) in _TENSOR_GLOBALS or module.startswith("torch._tensor") or module == "torch._utils":
            return super().find_class(module, name)
        if module == "torch" and name in {"float32", "float16", "bfloat16", "float64", "int64", "int32", "bool", "uint8"}:
            return super().find_class(module, name)
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if module.split(".")[0] in _CONFIG_MODULES and module != "builtins":
            return _inert_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: not a tensor or a known configuration type")


class _TensorOnlyPickleModule:
    """Passed to torch.load as `pickle_module`: torch subclasses our Unpickler and keeps find_class."""

    Unpickler = _TensorOnlyUnpickler
    UnpicklingError = pickle.UnpicklingError
    load = staticmethod(lambda f, **kw: _TensorOnlyUnpickler(f, **kw).load())

    def __getattr__(self, name):  # torch reads a few module-level names (e.g. __name__)
        return getattr(pickle, name)


def load_pickled(path: str | os.PathLike) -> Any:
    """Load a torch.save file without executing arbitrary code.

    First `weights_only=True` (torch's own allowlist); if the file also holds configuration objects (fairseq's
    hubert_base.pt does), retry with our tensor-only allowlist, which turns those objects into inert placeholders
    and refuses every other global by name.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        if "refusing" in str(first):
            raise
        try:
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TensorOnlyPickleModule())
        except pickle.UnpicklingError as err:
            raise CheckpointError(f"{path}: {err}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({str(err).splitlines()[0]})") from None


def to_numpy_state(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """torch tensors -> float32/int numpy arrays (fp16 voice weights are widened to fp32 here, once)."""
    out = {}
    for key, value in state.items():
        arr = value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
        out[key] = arr
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_safetensors(path: str | os.PathLike, weights: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None) -> None:
    """MLX weights plus a JSON config in the safetensors header metadata; written atomically."""
    from safetensors.numpy import save

    meta = {"rvc_bench": json.dumps(metadata or {}, sort_keys=True)}
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata=meta))


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    data = path.read_bytes()
    try:
        weights = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    return weights, json.loads(meta.get("rvc_bench", "{}"))


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
