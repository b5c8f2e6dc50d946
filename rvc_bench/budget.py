"""`rvc-bench ab --budget-minutes`: more ABBA pairs while the gate cannot decide yet, as Chromium's Pinpoint adds
repeats while its answer is "unknown", within a time budget.

The A/B job measures its --repeats pairs, then judges with the three-way rule (rvc_bench.stats.three_way): a speed
check whose interval straddles the threshold, or that has too few samples, is undecided for want of samples
(gate.Check.repeatable). While one is, and nothing has failed (a regression is an answer; more pairs would not
change it), one more pair (base and head, in ABBA order) is measured and everything judged again, as long as that
pair, timed as the average pair so far, still ends within the budget. A budget spent undecided is the gate's
"cannot decide" (exit status 3)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rvc_bench import gate


def schedule(repeats: int) -> list[tuple[str, int]]:
    """(side, run number) in ABBA order: pair i runs base first when i is even and head first when it is odd, so
    neither side is always the one measured first (or second) in a pair."""
    order = []
    for i in range(repeats):
        order += [(name, i + 1) for name in (gate.SIDES if i % 2 == 0 else gate.SIDES[::-1])]
    return order


def text(budget_minutes: float | None) -> str:
    """The summary's words for the budget (nothing without one)."""
    if budget_minutes is None:
        return ""
    return f" (more while a speed check could not decide yet, within {budget_minutes:g} min)"


def wants_more(judged: tuple) -> bool:
    """judged: (checks, ...), as rvc_bench.ab.judge returns them."""
    checks = judged[0]
    return any(c.repeatable for c in checks) and not any(c.status == gate.FAIL for c in checks)


def measure_pairs(
    measure_pair: Callable[[int], bool],
    judge: Callable[[], tuple],
    repeats: int,
    budget_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[tuple, int]:
    """(the last judgement, the pairs measured). measure_pair(n): measures ABBA pair n (1-based), False when a side
    could not be measured (no more pairs then); judge(): (checks, ...) of every pair so far. `repeats` pairs, then,
    with a budget (seconds), more while wants_more and one more pair, timed as the average so far, fits."""
    started = clock()
    for n in range(1, repeats + 1):
        if not measure_pair(n):
            return judge(), n
    judged, pairs = judge(), repeats
    while budget_s is not None and wants_more(judged):
        if clock() + (clock() - started) / pairs > started + budget_s:
            break
        pairs += 1
        measured = measure_pair(pairs)
        judged = judge()
        if not measured:
            break
    return judged, pairs
