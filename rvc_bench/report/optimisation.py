""" "Optimisation impact": each optimisation variant (rvc_bench.variants) against its own backend's fp32 row of the
same run, with what it costs in accuracy against the fp32 torch reference and the original document's guess."""

from __future__ import annotations

import re

import pandas as pd

from rvc_bench import results, stats, variants
from rvc_bench.names import REFERENCES
from rvc_bench.report.formatting import RUN, col, empty, fmt_bytes, fmt_len, fmt_ratio, fmt_time, sig, table
from rvc_bench.report.query import Section, select

# The metrics each stage's accuracy cost is read from (all against the fp32 torch reference).
ACCURACY = {
    "hubert": ("rel_l2",),
    "rmvpe": ("cents_p95", "frames_apart", "voicing_disagreement"),
    "synth": ("snr_db",),
    "pipeline": ("snr_db", "frames_apart", "mrstft"),
}
NOTE = (
    "Each variant's speedup is its backend's fp32 time over the variant's, ratio of medians with its 95 % bootstrap "
    "interval, both measured in the same run; memory is the framework's peak (torch on the CPU: RSS growth) against "
    "fp32's; accuracy is against "
    "the fp32 torch reference, judged by the variant's own bounds in the tolerance table (check `variant-<name>`). "
    "The original document's expectation was written for Apple Silicon: its verdict here says on which device it "
    "was tested (held: the interval's low end reaches the expectation's low end; not held: its high end stays below; "
    "else undecided)."
)
COMMAND = (
    f"{RUN} --stages hubert,rmvpe,synth,pipeline --lengths 5 --variants {','.join([variants.FP32, *variants.VARIANTS])}"
)
BEST_NOTE = (
    "Each backend's fastest row of a stage at a length (any variant, chunked or tiled form included) among those "
    "within their accuracy bounds, and its fp32 row, against PyTorch's upstream-equivalent fp32 twin and the fastest "
    "PyTorch row found the same way: ratio of medians with its 95 % bootstrap interval (the rows may come from "
    "different runs of this machine)."
)


def expected_low(text: str) -> float | None:
    """ "1.3-1.5x" -> 1.3 (None: no expectation)."""
    m = re.match(r"([\d.]+)", text)
    return float(m.group(1)) if m else None


def verdict(expected: str, lo: float, hi: float, where: str) -> str:
    low = expected_low(expected)
    if low is None:
        return "no expectation"
    if not results.finite(lo):
        return f"not testable here ({where}: no fp32 row in the run)"
    word = "held" if lo >= low else "not held" if hi < low else "undecided"
    return f"{expected}: {word} on {where}"


def accuracy_text(sec: Section, r) -> str:
    par = sec.parity_of(r.stage, r.variant, r.audio_seconds, r.backend, r.device)
    cells = []
    for metric in ACCURACY.get(r.stage, ()):
        hit = par[par.metric == metric]
        if len(hit):
            h = hit.iloc[0]
            mark = "" if pd.isna(h.within_bound) else (" ok" if h.within_bound else " **FAIL**")
            cells.append(f"{metric} {sig(h.value)}{mark}")
    return "; ".join(cells) or "–"


def peak_text(r, base) -> str:
    """The variant's framework peak against fp32's; RSS growth where the framework has no counter (torch CPU)."""
    field, what = ("mem", "") if results.finite(r.mem) else ("rss", " RSS Δ")
    value = getattr(r, field)
    ratio = getattr(base, field) if base is not None else float("nan")
    against = f" ({sig(value / ratio)}× fp32)" if results.finite(ratio) and ratio else ""
    return f"{fmt_bytes(value)}{what}{against}" if results.finite(value) else "–"


def row(sec: Section, r) -> dict:
    base_variant = r.variant.rpartition(variants.SEPARATOR)[0]
    name = variants.of_row(r.variant)
    same = ("run_id", "stage", "audio_seconds", "backend", "device")  # the fp32 row of the variant's measurement
    base = select(sec.every, variant=base_variant, **{k: getattr(r, k) for k in same})
    where = col(r.backend, r.device)
    if len(base):
        b = base.iloc[0]
        speed = stats.ratio_ci(b.times, r.times)
        memory = peak_text(r, b)
    else:
        speed, memory = (float("nan"),) * 3, peak_text(r, None)
    v = variants.VARIANTS.get(name)
    return {
        "stage": r.stage,
        "audio": fmt_len(r.audio_seconds),
        "backend": where,
        "variant": f"`{name}` ({r.dtype})",
        "speedup over fp32": fmt_ratio(*speed) if len(base) else "no fp32 row in this run",
        "peak memory": memory,
        "accuracy vs fp32 torch": accuracy_text(sec, r),
        "original's expectation": verdict(v.expected if v else "", speed[1], speed[2], where),
    }


def optimised_lines(sec: Section) -> pd.DataFrame:
    return sec.lines[variants.optimised(sec.lines.variant)]


def optimisation_section(sec: Section) -> str:
    head = f"### Optimisation impact\n\n{NOTE}\n\n"
    opt = optimised_lines(sec)
    if opt.empty:
        return head + empty("no optimisation variant", COMMAND)
    order = opt.stage.map(results.STAGE_ORDER).fillna(99)
    opt = opt.assign(_o=order).sort_values(["_o", "audio_seconds", "backend", "device", "variant"])
    best = best_table(sec)
    return head + table([row(sec, r) for r in opt.itertuples()]) + (f"\n{best}" if best else "")


def passing(sec: Section, r) -> bool:
    """Whether a line's bounded parity rows are all within their bounds. An optimisation variant must have been
    judged too: with no bound for it, its accuracy is unknown (RMVPE's 4-bit weights, 1330 cents off, once had none)."""
    par = sec.parity_of(r.stage, r.variant, r.audio_seconds, r.backend, r.device)
    judged = par[par.within_bound.notna()]
    if judged.empty and variants.of_row(r.variant) != variants.FP32:
        return False
    return bool(judged.within_bound.astype(bool).all())


def fastest(sec: Section, lines: pd.DataFrame):
    ok = [r for r in lines.itertuples() if passing(sec, r) and results.finite(r.median)]
    return min(ok, key=lambda r: r.median) if ok else None


def speedup(ref, line) -> str:
    return fmt_ratio(*stats.ratio_ci(ref.times, line.times), (len(ref.times), len(line.times)))


def best_rows(sec: Section) -> list[dict]:
    out = []
    measured = sec.lines[~sec.lines.backend.isin(REFERENCES)]
    order = measured.stage.map(results.STAGE_ORDER).fillna(99)
    for (_, stage, seconds), g in measured.groupby([order, "stage", "audio_seconds"]):
        torch = g[g.backend == results.REFERENCE_BACKEND]
        twin = next(select(torch, variant=sec.main_variant(stage)).itertuples(), None)
        best_torch = fastest(sec, torch)
        if best_torch is None or len(torch) < 2 or twin is None:  # one PyTorch row: no "best" to read against
            continue
        for (backend, device), own in g[g.backend != results.REFERENCE_BACKEND].groupby(["backend", "device"]):
            best, fp32 = fastest(sec, own), next(select(own, variant=sec.main_variant(stage)).itertuples(), None)
            if best is None:
                continue
            out.append(
                {
                    "stage": stage,
                    "audio": fmt_len(seconds),
                    "best PyTorch": f"`{best_torch.variant}` ({best_torch.device}) {fmt_time(best_torch.median)}",
                    "backend": col(backend, device),
                    "its fastest": f"`{best.variant}` {fmt_time(best.median)}",
                    "fastest vs PyTorch fp32 twin": speedup(twin, best),
                    "fastest vs best PyTorch": speedup(best_torch, best),
                    "its fp32 vs best PyTorch": speedup(best_torch, fp32) if fp32 is not None else "–",
                }
            )
    return out


def best_table(sec: Section) -> str:
    rows = best_rows(sec)
    if not rows:
        return ""
    return f"#### Against the best PyTorch\n\n{BEST_NOTE}\n\n" + table(rows)
