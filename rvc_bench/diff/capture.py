"""Capture every named submodule's output while a model runs, on torch (forward hooks) and on MLX (which has no
hooks: each submodule's class is swapped, for the capture only, for a subclass whose __call__ also records).

An entry is (name, call, arrays): the module's dotted name (the twins share them), how many calls of that name came
before, and its outputs as numpy in the framework's own layout. Entries arrive in completion order: a leaf finishes
before the block around it, so the first entry past tolerance is the innermost module where a divergence begins.
Functions called outside a module (a functional activation, say) show up in the first module whose output they
reach. This module imports no framework: each tap imports its own when it is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Entry:
    name: str
    call: int  # earlier calls of the same name (a module run per chunk, per window or per tile has several)
    arrays: tuple[np.ndarray, ...]
    channels_first: bool  # the framework keeps channels on axis 1 (torch, ONNX) rather than last (MLX)


class CaptureTooLarge(MemoryError):
    """The held outputs passed the recorder's byte limit (a long input at full size holds tens of GiB)."""


class Recorder:
    """Collects entries; `sink(entry)`, when given, receives each one instead (so one side is compared while it runs
    and only the other side's outputs are held). limit: the bytes of held entries past which `add` raises
    CaptureTooLarge, before the machine runs out of memory (None: no limit)."""

    def __init__(self, sink: Callable[[Entry], None] | None = None, limit: int | None = None):
        self.entries: list[Entry] = []
        self.calls: dict[str, int] = {}
        self.sink = sink or self.entries.append
        self.limit, self.held, self.holds = limit, 0, sink is None

    def add(self, name: str, outputs: Any, channels_first: bool) -> None:
        arrays = tuple(_arrays(outputs))
        if not arrays:
            return
        self.held += sum(a.nbytes for a in arrays) if self.holds else 0
        if self.limit is not None and self.held > self.limit:
            raise CaptureTooLarge(f"{self.held / 2**30:.1f} GiB of module outputs held at {name}")
        call = self.calls.get(name, 0)
        self.calls[name] = call + 1
        self.sink(Entry(name, call, arrays, channels_first))


def _arrays(out: Any) -> Iterator[np.ndarray]:
    """Every array in a module's output (tuples, lists and dicts flattened in order; anything else skipped)."""
    if isinstance(out, (tuple, list)):
        for o in out:
            yield from _arrays(o)
    elif isinstance(out, dict):
        for k in sorted(out):
            yield from _arrays(out[k])
    elif isinstance(out, np.ndarray):
        yield out
    elif type(out).__module__.startswith("torch"):
        if hasattr(out, "detach"):
            yield out.detach().cpu().float().numpy() if out.is_floating_point() else out.detach().cpu().numpy()
    elif type(out).__module__.startswith("mlx"):
        import mlx.core as mx

        yield np.array(out.astype(mx.float32) if mx.issubdtype(out.dtype, mx.floating) else out)


def modules(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(name, module) of every submodule of a torch or MLX model, or of a plain object holding models in its
    attributes (RMVPE's stage object holds `model` and `mel`): names are dotted paths from `obj`."""
    if _is_torch_module(obj):
        return [(prefix + n, m) for n, m in obj.named_modules() if n] + ([(prefix[:-1], obj)] if prefix else [])
    if _is_mlx_module(obj):
        return [(prefix + n, m) for n, m in obj.named_modules() if n] + ([(prefix[:-1], obj)] if prefix else [])
    found = []
    for attr, value in vars(obj).items() if hasattr(obj, "__dict__") else ():
        if _is_torch_module(value) or _is_mlx_module(value):
            found += modules(value, f"{prefix}{attr}.")
    return found


def _is_torch_module(obj) -> bool:
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module" for c in type(obj).__mro__)


def _is_mlx_module(obj) -> bool:
    return any(c.__module__.startswith("mlx.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


@contextlib.contextmanager
def tap(model: Any, recorder: Recorder, prefix: str = "", rename: Callable[[str], str] | None = None):
    """Record every submodule of `model` (torch, MLX, or an object holding them) into `recorder` while inside.
    rename: maps a module's own name to the name it is compared under (a port's name map)."""
    rename = rename or (lambda n: n)
    torch_hooks, swapped = [], []
    first_name: dict[int, str] = {}  # a module shared under two names records under the first
    for name, module in modules(model, prefix):
        if id(module) in first_name:
            continue
        first_name[id(module)] = compared = rename(name)
        if _is_torch_module(module):
            hook = lambda _m, _a, out, n=compared: recorder.add(n, out, True)  # noqa: E731
            torch_hooks.append(module.register_forward_hook(hook))
        else:
            swapped.append((module, type(module)))
            module.__class__ = _recording_class(type(module))
    registry = {id(m): first_name[id(m)] for m, _ in swapped}
    active = (registry, recorder)
    _ACTIVE.append(active)
    try:
        yield recorder
    finally:
        _ACTIVE.remove(active)
        for h in torch_hooks:
            h.remove()
        for module, cls in swapped:
            module.__class__ = cls


_ACTIVE: list[tuple[dict[int, str], Recorder]] = []  # the MLX captures in progress (the classes look them up)
_RECORDING: dict[type, type] = {}


def _recording_class(cls: type) -> type:
    """A subclass of an MLX module class whose __call__ also records the output under the instance's name."""
    if cls not in _RECORDING:

        def __call__(self, *args, **kwargs):
            out = cls.__call__(self, *args, **kwargs)
            for registry, recorder in _ACTIVE:
                if id(self) in registry:
                    recorder.add(registry[id(self)], out, False)
            return out

        _RECORDING[cls] = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})
    return _RECORDING[cls]
