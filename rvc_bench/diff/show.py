"""A diff report as text: the module table (the first module past its bound marked), then the time axis."""

from __future__ import annotations

import json
import math

from rvc_bench.diff import compare

CONTEXT_ROWS = 5  # rows shown after the first divergent one
WORST_ROWS = 10  # rows shown when nothing diverges


def _num(v: float) -> str:
    return "-" if isinstance(v, float) and math.isnan(v) else f"{v:.3g}"


def _shown(rows: list[compare.Row], first: compare.Row | None, everything: bool) -> list[compare.Row]:
    if everything:
        return rows
    if first is not None:
        i = rows.index(first)
        return rows[max(0, i - CONTEXT_ROWS) : i + CONTEXT_ROWS + 1]
    judged = [r for r in rows if r.status == compare.OK]
    return sorted(judged, key=lambda r: -r.rel_l2)[:WORST_ROWS]


def module_table(report, everything: bool = False) -> list[str]:
    rows, first = report.rows, report.first
    judged = sum(r.status in (compare.OK, compare.PAST) for r in rows)
    past = sum(r.status == compare.PAST for r in rows)
    lines = [f"modules: {len(rows)} outputs, {judged} compared, {past} past the bound"]
    unpaired = sorted({r.status for r in rows} - {compare.OK, compare.PAST})
    for status in unpaired:
        names = sorted({r.name for r in rows if r.status == status})
        lines.append(f"  not compared ({status}): {len(names)} modules, e.g. {', '.join(names[:3])}")
    shown = _shown(rows, first, everything)
    if not shown:
        return lines
    title = "the first divergent module, in execution order" if first else f"the {len(shown)} closest to the bound"
    lines.append(f"  {'all' if everything else title}:")
    width = max(len(r.label) for r in shown)
    lines.append(f"    {'module':<{width}}  {'shape':<18} {'max |Δ|':>9} {'rel L2':>9} {'bound':>7}  status")
    for r in shown:
        mark = ">" if r is first else " "
        shape = "x".join(map(str, r.shape))
        lines.append(
            f"  {mark} {r.label:<{width}}  {shape:<18} {_num(r.max_abs):>9} {_num(r.rel_l2):>9} {r.bound:>7g}  "
            f"{r.status}"
        )
    return lines


def time_table(report) -> list[str]:
    lines = []
    for a in report.along:
        if a.first is None:
            lines.append(f"  {a.signal}: {a.frames} frames, none past {a.bound:g} {a.unit} (worst {_num(a.worst)})")
        else:
            at = f", {a.seam}" if a.seam else ""
            lines.append(
                f"  {a.signal}: first frame past {a.bound:g} {a.unit}: {a.first} ({a.first * a.seconds_per_frame:.2f} s"
                f"{at}); {a.count} of {a.frames} frames ({100 * a.share:.2g} %) past; worst {_num(a.worst)}"
            )
        lines += [f"    {n}" for n in a.notes]
    return ["along time:"] + lines if lines else []


def render(report, everything: bool = False) -> str:
    head = (
        f"rvc-bench diff {report.stage}: A {report.a.label} (reference), B {report.b.label}, "
        f"{report.seconds:g} s; bounds: rel L2 {report.bound:g} per module, {report.frame_bound:g} per frame"
    )
    return "\n".join([head, *module_table(report, everything), *time_table(report), report.where()]) + "\n"


def output(report, as_json: bool = False, everything: bool = False) -> str:
    """What `rvc-bench diff` prints: the text report, or the JSON one."""
    return json.dumps(rows_json(report), indent=1) + "\n" if as_json else render(report, everything)


def rows_json(report) -> dict:
    """The report as JSON-ready data (`--json`; non-finite numbers as null)."""
    nan = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    return {
        "stage": report.stage,
        "a": report.a.label,
        "b": report.b.label,
        "seconds": report.seconds,
        "bound": report.bound,
        "frame_bound": report.frame_bound,
        "diverged": report.diverged,
        "where": report.where(),
        "first_module": None if report.first is None else report.first.label,
        "modules": [
            {
                "module": r.label,
                "shape": list(r.shape),
                "max_abs": nan(r.max_abs),
                "rel_l2": nan(r.rel_l2),
                "status": r.status,
            }
            for r in report.rows
        ],
        "along": [
            {
                "signal": a.signal,
                "frames": a.frames,
                "first": a.first,
                "count": a.count,
                "share": a.share,
                "worst": nan(a.worst),
                "bound": a.bound,
                "unit": a.unit,
                "seam": a.seam,
                "notes": a.notes,
            }
            for a in report.along
        ],
    }
