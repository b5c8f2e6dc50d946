"""The report's "Real-time" section from stream rows (rvc_bench.report.realtime); the committed store has none, so
`rvc-bench report --check` (tests/test_report.py) shows the section is left out where there are no rows."""

import re
from types import SimpleNamespace

import pandas as pd

from rvc_bench import store
from rvc_bench.report import realtime

PARITY = {"snr_db": (40.0, 50.0, ">=", False)}  # metric: value, bound, op, within; MLX's 40 dB breaks the bound


def stream_rows(backend, block, p99_ms, missed, extra=2.5, parity=PARITY) -> list[dict]:
    run = store.Run(machine_id="m", model_size="tiny", run_id="r", started_at="2026-01-01T00:00:00Z")
    figures = {"delay_ms": (2 * block + 0.06) * 1000, "p50_ms": p99_ms / 2, "p95_ms": p99_ms * 0.9, "p99_ms": p99_ms}
    figures |= {"max_ms": p99_ms, "rtf": 0.5, "missed_share": missed, "latency_ms": (2 * block + 0.06) * 1000 + 1}
    values = [(f"stream.{k}", v) for k, v in figures.items()] + [("time_cold", 0.5), ("mem_framework_peak", 2.0**20)]
    for metric, value in values:
        run.add(stage="stream", variant="v2-40k", backend=backend, device="cpu", device_name="", dtype="float32",
                audio_seconds=5.0, metric=metric, value=value, unit="", block_time=block, crossfade_time=0.05,
                extra_time=extra)  # fmt: skip
    for name, (value, bound, op, within) in parity.items() if backend != "torch" else ():  # against torch's stream
        run.add(stage="stream", variant="v2-40k", backend=backend, device="cpu", device_name="", dtype="float32",
                audio_seconds=5.0, metric=f"parity.{name}", value=value, unit="", reference="torch", bound=bound,
                bound_op=op, within_bound=within, block_time=block, crossfade_time=0.05, extra_time=extra)  # fmt: skip
    return run.rows


def section(*rows) -> str:
    frame = pd.DataFrame(sum(rows, []), columns=list(store.COLUMNS)).astype(store.COLUMNS)
    return realtime.realtime_section(SimpleNamespace(rows=frame))


def test_the_smallest_block_without_misses_and_with_p99_below_it_is_named_with_its_latency():
    text = section(
        stream_rows("torch", 0.1, 150.0, 0.0),  # p99 above the block: not sustainable
        stream_rows("torch", 0.25, 200.0, 0.0),  # sustainable
        stream_rows("torch", 0.5, 200.0, 0.0),
        stream_rows("torch", 0.1, 50.0, 0.0, extra=0.5),  # not the default context: not a candidate
        stream_rows("mlx", 0.25, 200.0, 0.1),  # a missed deadline
    )
    assert text.startswith("### Real-time\n")
    assert "| PyTorch (cpu) | 5 s     | 0.1, 0.25, 0.5        | 0.25 s                       | 561 ms" in text
    assert "| MLX (cpu)     | 5 s     | 0.25                  | none of these" in text
    assert "| PyTorch (cpu) | 5 s     | 0.1 / 0.05 / 0.5" in text and "1.00 MiB" in text
    assert text.count("FAIL: snr_db 40.0 (>= 50)") == 1
    torch_rows = [line for line in text.splitlines() if line.startswith("| PyTorch")]
    assert sum(line.rstrip(" |").endswith("–") for line in torch_rows) == 4  # the reference has no parity


def test_ties_are_shown_beside_a_pass_and_a_divergence_fails():
    nan = float("nan")
    free = {"frames_apart": (2.0, nan, "", None), "frames_apart_tied": (2.0, nan, "", None)}
    free |= {"snr_db": (-1.97, nan, "", None), "same_f0_snr_db": (114.0, 90.0, ">=", True)}
    untied = {"untied_frames_apart": (0.0, 0.0, "<=", True)}
    tied = section(stream_rows("mlx", 0.25, 200.0, 0.0, parity=free | untied))
    assert "| pass (2 of 2); free-running: 2 f0 frames apart (2 ties), worst block -1.97 dB |" in tied
    diverged = section(
        stream_rows("mlx", 0.25, 200.0, 0.0, parity=free | {"untied_frames_apart": (1.0, 0.0, "<=", False)})
    )
    assert "| FAIL: untied_frames_apart 1.00 (<= 0); free-running: 2 f0 frames apart (2 ties), worst" in diverged
    clean = section(stream_rows("mlx", 0.25, 200.0, 0.0, parity={"frames_apart": (0.0, nan, "", None)} | untied))
    assert re.search(r"\| pass \(1 of 1\) +\|\n", clean)


def test_no_stream_rows_no_section():
    assert section() is None


def test_the_processing_figure_exists_only_beside_stream_rows():
    from rvc_bench.report.sections import figures_of

    rows = pd.DataFrame(stream_rows("torch", 0.25, 200.0, 0.0), columns=list(store.COLUMNS)).astype(store.COLUMNS)
    no_lines = pd.DataFrame(columns=["variant"])  # no optimisation variant either
    with_rows = SimpleNamespace(rows=rows, lines=no_lines, slug="m-tiny")
    assert "m-tiny-realtime.png" in figures_of(with_rows)
    assert "m-tiny-realtime.png" not in figures_of(SimpleNamespace(rows=rows.iloc[0:0], lines=no_lines, slug="m-tiny"))
    from rvc_bench import plots

    assert plots.png(figures_of(with_rows)["m-tiny-realtime.png"])[:4] == b"\x89PNG"
