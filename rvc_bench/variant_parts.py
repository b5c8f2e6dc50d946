"""What the variants share, framework-free: the variant record, where a variant acts in a stage's model, and the
helpers that wrap a model's methods (each backend's module passes its own cast)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    dtype: str  # the store's dtype column
    backends: tuple[str, ...]
    what: str
    expected: str = ""  # the original document's claim, for the report's verdict
    check: str = ""  # the tolerance table's check it is held to (default "variant-<name>")


@dataclass(frozen=True)
class StageParts:
    """Where a variant acts in a stage's model: `core` the attribute holding the network ("" = the model itself);
    `keep_fp32` its submodules kept in fp32 at half precision; `entry` the model method the stage's inputs enter by
    and `cast_args` which of its arguments are cast to half; `half_out` callables whose output is cast to half
    (RMVPE's fp32 log-mel), `fp32_out` those cast back to fp32 (RMVPE's salience, which the stage decodes in numpy);
    `mlx_compile` the methods given to mx.compile, `torch_compile` the modules given to torch.compile (dotted paths
    from the model; torch.compile cannot trace through the twins' inference_mode-decorated methods, so it takes the
    modules they call); `onnx_fp32_inputs` the ONNX graph inputs the twins do not cast (the synthesizer's f0)."""

    core: str = ""
    keep_fp32: tuple[str, ...] = ()
    entry: str = ""
    cast_args: tuple[int, ...] = ()
    half_out: tuple[str, ...] = ()
    fp32_out: tuple[str, ...] = ()
    mlx_compile: tuple[str, ...] = ()
    torch_compile: tuple[str, ...] = ()
    onnx_fp32_inputs: tuple[str, ...] = ()


class VariantError(ValueError):
    """A variant a backend or stage cannot run: one line naming the combination."""


class NotApplicable(VariantError):
    """A variant on a network with no layer it acts on (quantisation, a memory layout): a pipeline applies it to the
    others."""


def lookup(obj, path: str):
    """The object at a dotted path from obj ("": obj itself; digits index lists)."""
    for name in filter(None, path.split(".")):
        obj = obj[int(name)] if name.isdigit() else getattr(obj, name)
    return obj


def cast_inputs(model, parts: StageParts, cast, dtype, every: bool = False) -> None:
    """Wrap the model's entry method so that its arguments at parts.cast_args (every: all of them) are cast
    (floating arrays only)."""
    if not parts.entry:
        return
    inner = getattr(model, parts.entry)

    def entry(*args, **kwargs):
        return inner(*(cast(a, dtype) if every or i in parts.cast_args else a for i, a in enumerate(args)), **kwargs)

    setattr(model, parts.entry, entry)


def cast_outputs(model, parts: StageParts, cast, dtype, fp32) -> None:
    """Wrap the callables of parts.half_out / fp32_out so that their outputs come out in `dtype` / `fp32`."""
    for paths, to in ((parts.half_out, dtype), (parts.fp32_out, fp32)):
        for path in paths:
            owner, attr = resolve(model, path)
            inner = getattr(owner, attr)
            setattr(owner, attr, lambda *a, inner=inner, to=to: cast(inner(*a), to))


def resolve(obj, path: str):
    """(owner, attribute name) of a dotted path from obj, for setattr."""
    owner, _, attr = path.rpartition(".")
    return lookup(obj, owner), attr
