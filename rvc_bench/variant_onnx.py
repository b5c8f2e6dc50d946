"""The variants on ONNX Runtime: the export's graphs rewritten by ONNX Runtime's own tools (dynamic int8
quantisation, float16 conversion), or opened at another graph optimisation level.

A variant reopens the stage's sessions through a copy of the backend whose `session()` rewrites each graph it opens
(the chunked RMVPE's and the streaming synthesizer's part graphs too) or sets the level. A rewritten graph is cached
beside the export as `<export>.<variant>-<hash of the rewrite's code and settings>.onnx`, rebuilt when the export is
newer.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
from pathlib import Path

import onnx

from rvc_bench.variant_parts import StageParts, Variant, VariantError, lookup

LEVELS = {"ort-basic": "ORT_ENABLE_BASIC", "ort-extended": "ORT_ENABLE_EXTENDED", "ort-none": "ORT_DISABLE_ALL"}
QUANTISED_OPS = ["MatMul", "Gemm"]  # the Linear layers, as torch's dynamic int8 takes them
# Unsigned weights: x86's u8s8 kernels (VPMADDUBSW) saturate, which cost RMVPE's salience 48 % rel L2 against 0.9 %
# for u8u8 (tiny, 1 s), as ONNX Runtime's quantisation guide warns.
INT8_WEIGHTS = "QUInt8"
# Kept in float32 at float16: the NSF source's phase is a running sum over the chunk (CumSum), as in the twins.
FP32_OPS = ["CumSum"]
# ONNX Runtime 1.32's CPU provider crashes (SIGSEGV) opening the converted RMVPE at level ALL when this pass fuses the
# float16 initializers into its NCHWc convolutions; without it the graph opens and runs.
FP16_DISABLED = ("FuseFp16InitializerToFp32NodeTransformer",)


def _int8(source: Path, target: Path, parts: StageParts) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a root-logger warning on every call (its optional pre-processing step): not ours to show.
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        weights = getattr(QuantType, INT8_WEIGHTS)
        quantize_dynamic(source, target, op_types_to_quantize=QUANTISED_OPS, weight_type=weights)
    finally:
        root.setLevel(level)


def _fp16(source: Path, target: Path, parts: StageParts) -> None:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(source)
    kept = _fp32_nodes(model, parts)
    model = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + FP32_OPS, node_block_list=kept
    )
    _skip_input_round_trips(model, set(parts.onnx_fp32_inputs))
    onnx.save(model, target)


def _fp32_nodes(model, parts: StageParts) -> list[str]:
    """The nodes kept in float32, as the twins keep them: those of the modules in parts.keep_fp32 (the exporter
    records each node's module path) and those computed from the fp32 inputs alone (the synthesizer's f0 path)."""
    scopes = [f"'model.{path}'" for path in parts.keep_fp32]  # the exports wrap the twin as `model`

    def module_path(node) -> str:
        return next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")

    def reached(names: set[str]) -> set[str]:
        values, nodes = set(names), set()
        for node in model.graph.node:  # the exporter writes nodes in topological order
            if any(i in values for i in node.input):
                nodes.add(node.name)
                values.update(node.output)
        return nodes

    floats = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    kept_inputs = set(parts.onnx_fp32_inputs) & floats
    f0_only = reached(kept_inputs) - reached(floats - kept_inputs)
    return [n.name for n in model.graph.node if n.name in f0_only or any(s in module_path(n) for s in scopes)]


def _skip_input_round_trips(model, inputs: set[str]) -> None:
    """keep_io_types casts every float input to float16, even one whose consumers stay in float32 (which cast it
    back): those consumers read the input itself instead, so the f0 is never rounded to float16."""
    nodes = model.graph.node
    producer = {out: node for node in nodes for out in node.output}

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    direct = {}  # a round trip's output -> the input it started from
    for node in nodes:
        first = producer.get(node.input[0]) if node.input else None
        if cast_to(node) == onnx.TensorProto.FLOAT and first is not None and first.input[0] in inputs:
            if cast_to(first) == onnx.TensorProto.FLOAT16:
                direct[node.output[0]] = first.input[0]
    for node in nodes:
        node.input[:] = [direct.get(name, name) for name in node.input]
    while True:  # drop the casts nothing reads now (a float16 cast, once the float32 cast after it is gone)
        read = {name for node in nodes for name in node.input} | {out.name for out in model.graph.output}
        unused = [n for n in nodes if n.op_type == "Cast" and not any(out in read for out in n.output)]
        if not unused:
            return
        for node in unused:
            nodes.remove(node)


REWRITES = {"int8": _int8, "fp16": _fp16}


def rewritten(source: Path, name: str, parts: StageParts) -> Path:
    """The export at `source` rewritten by variant `name` (cached; see the module's docstring)."""
    import onnxruntime

    # Keyed by what makes the rewrite: this module's code, the stage's parts and the tools' versions.
    settings = repr((name, parts, onnxruntime.__version__, onnx.__version__)).encode() + Path(__file__).read_bytes()
    target = source.with_name(f"{source.stem}.{name}-{hashlib.sha1(settings).hexdigest()[:8]}{source.suffix}")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        REWRITES[name](source, partial, parts)  # both tools keep the export's metadata, which the runners read
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def apply(model, parts: StageParts, v: Variant) -> None:
    core = lookup(model, parts.core)
    backend = copy.copy(core.backend)
    if v.name in LEVELS:
        backend.graph_optimization = LEVELS[v.name]
    elif v.name in REWRITES:
        backend.graph_transform = functools.partial(rewritten, name=v.name, parts=parts)
        backend.disabled_optimizers = FP16_DISABLED if v.name == "fp16" else ()
    else:
        raise VariantError(f"variant {v.name} does not run on onnx")
    # Opened again as at load, through the variant's backend: the same checks of ports and metadata apply.
    core.__init__(core.path, backend, core.cfg)
