"""Live-mode benchmark (rvc_bench.stream): bench.audio(seconds) fed block by block on a simulated clock, each block
timed; stored per block (time_block, one row per block), the figures (stream.<name>: algorithmic delay, p50/p95/
p99/max processing, real-time factor, share of missed deadlines, latency = delay + p95), the prewarm block's time
(time_cold) and the whole stream's peak memory, with the settings in the block_time, crossfade_time and extra_time
columns. Grid: block 0.1, 0.25, 0.5, 1.0 s at the default crossfade (0.05 s) and extra context (2.5 s), and extra
0.5 and 5 s at 0.25 s (the content encoder's cost grows with it). Parity: the stream against torch's on the same
input and noise, as suites/stream_twins.py compares them, in untimed runs (stage stream, check twins).
"""

from __future__ import annotations

import pytest
import stream_twins
from test_bench_pipeline import VARIANT, models

from rvc_bench import stream

GRID = [(0.1, 2.5), (0.25, 2.5), (0.5, 2.5), (1.0, 2.5), (0.25, 0.5), (0.25, 5.0)]  # (block_time, extra_time)


def rows(result: stream.StreamResult) -> list[tuple]:
    """(metric, value, unit, round) rows of one stream."""
    out = [("time_cold", result.cold_seconds, "s", -1)]
    out += [("time_block", t, "s", i) for i, t in enumerate(result.seconds)]
    units = {"rtf": "", "missed_share": ""}
    return out + [(f"stream.{k}", v, units.get(k, "ms"), -1) for k, v in result.figures().items() if k != "cold_ms"]


@pytest.mark.parametrize("block_time, extra_time", GRID, ids=[f"block{b:g}-extra{e:g}" for b, e in GRID])
def test_bench_stream(benchmark, bench, backend_name, seconds, block_time, extra_time):
    size = bench.model_size
    be = bench.backend(backend_name)
    m = models(backend_name, VARIANT, size, be.device)
    audio = bench.audio(seconds).audio
    opts = stream.StreamOptions(block_time=block_time, extra_time=extra_time, seed=0)
    settings = dict(block_time=block_time, crossfade_time=opts.crossfade_time, extra_time=extra_time)
    run = lambda x: stream.run(m, x, opts)  # noqa: E731
    result = bench.measure_once(
        benchmark, be, run, (audio,), rows, stage="stream", variant=VARIANT, seconds=seconds, **settings
    )
    f = result.figures()
    bench.session.write_line(
        f"  stream {block_time:g}/{extra_time:g} s {be.label} {seconds:g}s: p50 {f['p50_ms']:.1f} ms, p99 "
        f"{f['p99_ms']:.1f} ms, RTF {f['rtf']:.2f}, missed {100 * f['missed_share']:.0f} %"
    )
    if (backend_name, be.device) == ("torch", "cpu"):
        return  # the reference
    ref = bench.reference(
        ("stream", VARIANT, size, seconds, block_time, extra_time),
        lambda: stream_twins.logged_run(models("torch", VARIANT, size), audio, opts),
    )
    bench.record_parity(stream_twins.twin_metrics(m, audio, opts, ref), check="twins")
