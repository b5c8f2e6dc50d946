"""ONNX graphs of the stages: export from the torch twins, the export cache, and the input/output contract every
ONNX runner checks before it runs a file (ours or an upstream export).

Export: torch.onnx.export(dynamo=True) at a fixed opset 18. The TorchScript exporter (dynamo=False, deprecated
since torch 2.9) cannot export the mel front end at all: it has no complex STFT. Opset 18 is the dynamo exporter's
native opset (torch 2.13 translates to it without a version conversion), has STFT (17+), and is what upstream RVC's
own synthesizer export uses.

One fix-up after every export: the exporter annotates intermediate values with shapes taken from its fake-tensor
trace, and for nn.GRU (RMVPE's BiGRU) that trace keeps the example's frame count as a fixed size. ONNX Runtime's
optimiser then bakes that size into a fused Gemm reshape and the graph fails at any other length. The annotations
(graph.value_info) are optional, so they are dropped (ORT infers shapes from the inputs itself), and the graph's
inputs and outputs are declared from the runner's contract (`Port`), with named dynamic axes.

Cache: exports live in <cache>/onnx/, named by stage and variant plus a key hashed from the source checkpoint's
SHA-256, the opset, the torch and onnxscript versions and EXPORT_VERSION, so a changed checkpoint or exporter
re-exports. The same facts, and the stage's config, are written into the file's metadata_props. The key is computed
from package metadata, so finding a cached export imports neither torch nor the exporter; `ensure_exported` makes a
missing one in a child process, so that a process measuring ONNX Runtime never runs (or imports) torch for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rvc_bench.fileio import atomic_write_bytes
from rvc_bench.layout import CheckpointError

OPSET = 18
EXPORT_VERSION = 2  # bump when an export wrapper changes what a graph computes, so cached exports are redone
META_PREFIX = "rvc_bench."
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(int64)": "int64",
    "tensor(double)": "float64",
    "tensor(int32)": "int32",
    "tensor(float16)": "float16",
    "tensor(bool)": "bool",
}


class OnnxModelError(CheckpointError):
    """An .onnx file the runner cannot use: unreadable, or inputs/outputs that differ from what it needs."""


@dataclass(frozen=True)
class Port:
    """One graph input or output as a runner needs it: name, dtype, and per axis a fixed size (int) or the name of
    a dynamic axis (str)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    def __str__(self) -> str:
        return f"{self.name} {self.dtype}[{', '.join(map(str, self.dims))}]"


def _dim_text(d) -> str:
    return "?" if d is None else str(d)


def check_ports(found: Sequence, expected: Sequence[Port], kind: str, what: str, by_name: bool = True) -> None:
    """Compare a session's NodeArgs (name, type, shape) with the ports a runner needs; raise naming the first
    mismatch. by_name=False matches by position (upstream files whose tensor names vary)."""
    names = [a.name for a in found]
    if by_name:
        missing = [p.name for p in expected if p.name not in names]
        extra = [n for n in names if n not in {p.name for p in expected}]
        if missing or extra:
            parts = ([f"no {kind} {', '.join(map(repr, missing))}"] if missing else []) + (
                [f"unexpected {kind} {', '.join(map(repr, extra))}"] if extra else []
            )
            raise OnnxModelError(
                f"{what}: {'; '.join(parts)} (the runner needs {kind}s {', '.join(str(p) for p in expected)})"
            )
        pairs = [(next(a for a in found if a.name == p.name), p) for p in expected]
    else:
        if len(found) != len(expected):
            raise OnnxModelError(
                f"{what}: {len(found)} {kind}s ({', '.join(map(repr, names))}), the runner needs "
                f"{len(expected)}: {', '.join(str(p) for p in expected)}"
            )
        pairs = list(zip(found, expected))
    for arg, port in pairs:
        dtype = _ORT_TYPES.get(arg.type, arg.type)
        shape = list(arg.shape)
        if dtype != port.dtype:
            raise OnnxModelError(f"{what}: {kind} {arg.name!r} is {dtype}, the runner needs {port}")
        if len(shape) != len(port.dims):
            raise OnnxModelError(
                f"{what}: {kind} {arg.name!r} has {len(shape)} axes "
                f"[{', '.join(map(_dim_text, shape))}], the runner needs {port}"
            )
        for axis, (have, want) in enumerate(zip(shape, port.dims)):
            if isinstance(have, int) and isinstance(want, int) and have != want:
                raise OnnxModelError(f"{what}: {kind} {arg.name!r} axis {axis} is {have}, the runner needs {port}")
            if isinstance(have, int) and isinstance(want, str):
                raise OnnxModelError(
                    f"{what}: {kind} {arg.name!r} axis {axis} is fixed at {have}, the runner needs "
                    f"it dynamic ({want}): {port}"
                )


def open_session(path: str | os.PathLike, backend, stage: str) -> tuple[object, dict]:
    """(InferenceSession on the backend, rvc-bench metadata or {} for other files); unreadable files and exports
    of another stage are OnnxModelError."""
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"ONNX model not found: {path}")
    try:
        session = backend.session(path)
    except Exception as err:  # ORT raises its own types (InvalidProtobuf, Fail, ...) with multi-line messages
        if type(err).__module__.startswith("onnxruntime"):
            raise OnnxModelError(f"{path}: not a loadable ONNX model ({str(err).splitlines()[0][:300]})") from None
        raise
    meta = {
        k[len(META_PREFIX) :]: v
        for k, v in session.get_modelmeta().custom_metadata_map.items()
        if k.startswith(META_PREFIX)
    }
    if meta and meta.get("stage") != stage:
        raise OnnxModelError(f"{path}: an rvc-bench export of stage {meta.get('stage')!r}, not {stage!r}")
    return session, meta


# ---------------------------------------------------------------------------------------------------------------
# Export


def exporter_versions() -> dict:
    versions = {}
    for dist in ("torch", "onnxscript"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"opset": OPSET, **versions, "export_version": EXPORT_VERSION}


def export(
    module,
    args: tuple,
    path: str | os.PathLike,
    inputs: Sequence[Port],
    outputs: Sequence[Port],
    dynamic_shapes: Mapping[str, dict | None],
    metadata: Mapping[str, object],
) -> Path:
    """Export `module(*args)` (forward's parameters named like `inputs`) to `path`, atomically."""
    import torch

    with torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            opset_version=OPSET,
            verbose=False,
            input_names=[p.name for p in inputs],
            output_names=[p.name for p in outputs],
            dynamic_shapes=dict(dynamic_shapes),
        )
    model = program.model_proto
    del model.graph.value_info[:]  # see the module docstring
    ports = {p.name: p for p in [*inputs, *outputs]}
    for value in [*model.graph.input, *model.graph.output]:
        port, dims = ports[value.name], value.type.tensor_type.shape.dim
        for dim, want in zip(dims, port.dims):
            dim.Clear()
            if isinstance(want, int):
                dim.dim_value = want
            else:
                dim.dim_param = want
    for key, value in {**metadata, **exporter_versions()}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, value if isinstance(value, str) else json.dumps(value)
    path = Path(path)
    atomic_write_bytes(path, model.SerializeToString())
    return path


def source_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint file, or of a checkpoint folder (a Hugging Face ContentVec): its files' names and
    contents."""
    path = Path(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        if path.is_dir():
            h.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def export_path(cache_dir: str | os.PathLike, stage: str, variant: str, source: str | os.PathLike | None) -> Path:
    """<cache>/onnx/<stage>-<variant>-<key>.onnx: key hashes the source checkpoint's SHA-256 (None for graphs
    without weights, e.g. mel), the variant and exporter_versions(). Imports nothing heavy."""
    digest = source_sha256(source) if source is not None else ""
    key_src = json.dumps({"source_sha256": digest, "variant": variant, **exporter_versions()}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    return Path(cache_dir) / "onnx" / f"{stage}-{variant}-{key}.onnx"


def cached_export(
    cache_dir: str | os.PathLike,
    stage: str,
    variant: str,
    source: str | os.PathLike | None,
    export_to: Callable[[Path, dict], object],
) -> Path:
    """export_path(...), exported in this process by `export_to(path, metadata)` on first use; metadata carries
    the source's name and hash into the file."""
    path = export_path(cache_dir, stage, variant, source)
    if not path.is_file():
        export_to(path, source_metadata(source))
    return path


def source_metadata(source: str | os.PathLike | None) -> dict:
    """What an export records of its source checkpoint: its name and hash ({} for graphs without weights)."""
    return {"source": Path(source).name, "source_sha256": source_sha256(source)} if source is not None else {}


_CHILD = """import importlib, json, sys
from rvc_bench.layout import CheckpointError
try:
    importlib.import_module(sys.argv[1]).ensure(*json.loads(sys.argv[2]), **json.loads(sys.argv[3]))
except CheckpointError as err:
    sys.exit(f"rvc-bench: error: {err}")
"""


def ensure_exported(path: Path, module: str, *args, **kwargs) -> Path:
    """`path`, made by `module.ensure(*args, **kwargs)` in a fresh interpreter when missing: the calling process
    (which may be measuring ONNX Runtime) never imports torch or runs its exporter. A bad checkpoint is the child's
    one-line CheckpointError; any other failure names the export and the child's last line."""
    if path.is_file():
        return path
    print(f"rvc-bench: exporting {path.name} to ONNX (once; cached in {path.parent})", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            module,
            json.dumps([str(a) if isinstance(a, Path) else a for a in args]),
            json.dumps(kwargs),
        ],
        capture_output=True,
        text=True,
    )
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode != 0 and tail.startswith("rvc-bench: error: "):
        raise CheckpointError(tail.removeprefix("rvc-bench: error: "))
    if proc.returncode != 0 or not path.is_file():
        raise OnnxModelError(f"ONNX export of {path.name} failed (status {proc.returncode}): {tail}")
    return path
