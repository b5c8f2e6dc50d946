"""Name the first divergent module behind the gate's parity failures: each failing (stage, backend, device, size,
length) is diffed against torch on the CPU on the same synthetic input, so the gate's summary says where."""

from __future__ import annotations

from rvc_bench.diff import run
from rvc_bench.diff.sides import STAGE_OPTIONS, Side

# Module outputs of both sides are held in memory: longer measurements are located on their first seconds.
LOCATE_SECONDS = 10.0
LOCATABLE_BACKENDS = ("torch", "mlx", "onnx")


def located(checks, commit: str | None = None) -> list[str]:
    """One line per distinct failing parity measurement of `checks` (gate.Check with `measured`): where its backend
    parts from torch on the CPU. commit: run both sides at that commit (an A/B's head)."""
    failing = sorted({c.measured for c in checks if c.kind == "parity" and not c.ok and c.measured})
    lines = []
    for stage, backend, device, size, seconds in failing:
        if stage not in STAGE_OPTIONS or backend not in LOCATABLE_BACKENDS:
            continue
        length = min(seconds, LOCATE_SECONDS)
        label = f"{stage} {backend}({device}) {seconds:g}s [{size}]"
        try:
            inputs = run.inputs_for(stage, size, length, 0)
            report = run.diff(stage, Side("torch", "cpu", commit=commit), Side(backend, device, commit=commit), inputs)
        except run.INPUT_ERRORS as err:
            lines.append(f"{label}: cannot diff ({err})")
            continue
        at = f" (diffed at {length:g} s)" if length < seconds else ""
        lines.append(f"{label}{at}: {report.where()}")
    return lines


def appendix(checks, what: str, commit: str | None = None) -> str:
    """The gate's or ab's summary lines naming where each failing parity measurement parts ("" when none fails)."""
    if not any(c.kind == "parity" and not c.ok for c in checks):
        return ""
    return f"\nwhere {what} part from torch (rvc-bench diff):\n\n" + "".join(
        f"- {line}\n" for line in located(checks, commit)
    )
