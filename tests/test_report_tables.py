"""The benchmarks document's logic on hand-made rows (not measurements): published claims tested only on their
devices, each machine's speedup formed from its own rows, across-machine tables of times only, the scaling, chunking
and first-call tables, and the pipeline's parity verdicts; numbers printed to three significant figures."""

import math
import re

import pandas as pd
from helpers import add_row, add_times, sections

from rvc_bench import results, store, tolerances
from rvc_bench.report import files
from rvc_bench.report import formatting as fmt
from rvc_bench.report.document import render


def test_published_claims_are_tested_only_on_the_devices_they_were_made_for(tmp_path):
    """Report logic on hand-made rows (not measurements): MLX gpu 2.0x as fast as torch mps on RMVPE at 5 s."""
    run = store.Run(machine_id="mac-1", model_size="full", meta={"machine": {"cpu": "Apple M9"}})
    for backend, device, t in (("torch", "mps", 0.4), ("mlx", "gpu", 0.2)):
        times = [t * (1 + 0.001 * i) for i in range(7)]
        add_times(
            run,
            times,
            stage="rmvpe",
            variant="e2e",
            backend=backend,
            device=device,
            device_name="gpu",
            audio_seconds=5.0,
        )
        run.flush(tmp_path, f"rmvpe-{backend}")
    summary = sections(files.generate(tmp_path).text)["Summary"]
    assert re.search(r"RMVPE pitch at 5 s: MLX 1\.59× .*rmvpe_run1\): held: measured 2\.00×", summary)
    assert re.search(r"RMVPE pitch at 5 s: MLX 2\.05× .*rmvpe_run2\): not held: measured 2\.00×", summary)
    assert (
        "RMVPE pitch at 1 min: MLX 1.86× as fast as PyTorch MPS (published, rmvpe_run1): not measured here" in summary
    )


def test_a_machine_s_speedup_is_formed_from_its_own_rows(tmp_path):
    """Report logic on hand-made rows (not measurements): two full-size machines whose own speedups and crossed
    ratios all print differently. box-a: torch 0.4 s (one round of 1.6 s), MLX 0.2 s; box-b: torch 3 s, MLX 0.5 s.
    Expected by hand: box-a 0.4 / 0.2 = 2.00x (a ratio of means would be 2.86x); its interval stays 2.00-2.00, since
    a bootstrap resample's median is 1.6 s only when 4 of its 7 draws are that round (p ~ 1 %, under the 2.5 %
    tail); box-b 3 / 0.5 = 6.00x, no spread. Crossed: 0.4 / 0.5 = 0.800x and 3 / 0.2 = 15.0x, in neither."""
    times = {"box-a": {"torch": [0.4] * 6 + [1.6], "mlx": [0.2] * 7}, "box-b": {"torch": [3.0] * 7, "mlx": [0.5] * 7}}
    for machine_id, by_backend in times.items():
        run = store.Run(machine_id=machine_id, model_size="full", meta={"machine": {"cpu": machine_id}})
        for backend, values in by_backend.items():
            add_times(run, values, stage="hubert", variant="v2", backend=backend, audio_seconds=5.0)
            run.flush(tmp_path, f"hubert-{backend}")
    st = store.read(tmp_path)
    speed = results.speedups(results.lines(st.rows)).set_index("machine_id")
    assert speed.speedup.round(12).to_dict() == {"box-a": 2.0, "box-b": 6.0}
    doc = render(st, files.published()).text  # render: a function of what it is given
    secs = sections(doc)
    own = {"box-a": "2.00× (2.00–2.00)", "box-b": "6.00× (6.00–6.00)"}
    for machine_id, text in own.items():
        (section,) = [s for h, s in secs.items() if h.startswith(f"Machine `{machine_id}`")]
        summary = secs["Summary"].split(f"### Machine `{machine_id}`", 1)[1].split("\n### ", 1)[0]
        assert text in section and text in summary
        assert all(other not in section for other in set(own.values()) - {text})
    assert "0.800×" not in doc and "15.0×" not in doc and "2.86×" not in doc


def test_numbers_have_three_significant_figures_and_units():
    assert [fmt.sig(x) for x in (0.000557, 0.42449, 2134.33, 120.6277, 1.0, 0, 1e5)] == [
        "5.57e-4",
        "0.424",
        "2130",
        "121",
        "1.00",
        "0",
        "1.00e5",
    ]
    assert [fmt.fmt_time(x) for x in (0.00234, 0.62469, 12.312, 102.533, 5e-5)] == [
        "2.34 ms",
        "625 ms",
        "12.3 s",
        "103 s",
        "50.0 µs",
    ]
    assert fmt.fmt_bytes(634.2 * 2**20) == "634 MiB" and fmt.fmt_bytes(13.47 * 2**30) == "13.5 GiB"
    assert fmt.fmt_ratio(0.4244, 0.401, 0.4449) == "0.424× (0.401–0.445)"
    assert fmt.fmt_ratio(0.4244, 0.4244, 0.4244, (1, 1)) == "0.424× (one call each)"
    assert fmt.fmt_ratio(0.4244, 0.401, 0.4449, (1, 7)) == "0.424× (one call on one side)"
    assert fmt.fmt_len(5) == "5 s" and fmt.fmt_len(300) == "5 min" and fmt.fmt_len(90) == "90 s"


def test_across_machines_shows_absolute_times_side_by_side_and_never_a_ratio(tmp_path):
    """Report logic on hand-made rows (not measurements): two full-size machines."""
    for machine_id, scale in (("box-a", 1.0), ("box-b", 3.0)):
        run = store.Run(machine_id=machine_id, model_size="full", meta={"machine": {"cpu": machine_id}})
        for backend, t in (("torch", 0.4), ("mlx", 0.8)):
            add_times(run, [t * scale] * 7, stage="hubert", variant="v2", backend=backend, audio_seconds=5.0)
            run.flush(tmp_path, f"hubert-{backend}")
    across = sections(files.generate(tmp_path).text)["Across machines"]
    for text in ("400 ms", "800 ms", "1.20 s", "2.40 s", "`box-a` MLX (cpu)", "`box-b` PyTorch (cpu)"):
        assert text in across
    assert "×" not in across.split("\n\n", 2)[2]  # the table: times only


def _rows(run, stage, variant, backend, seconds, time_s, mem, rss, rounds=3, cold=None, **extra):
    common = dict(stage=stage, variant=variant, backend=backend, audio_seconds=seconds)
    if cold is not None:
        add_row(run, metric="time_cold", value=cold, **common)
    add_times(run, [time_s * (1 + 0.01 * i) for i in range(rounds)], **common)
    add_row(run, metric="mem_framework_peak", value=mem, unit="bytes", **common)
    add_row(run, metric="rss_peak_delta", value=rss, unit="bytes", **common)
    for name, (value, reference) in extra.items():
        add_row(run, metric=f"parity.{name}", value=value, unit="", reference=reference, **common)


def _pipeline_parity(run, seconds, name, value, bound=None, reference="torch", backend="mlx"):
    """One parity row of the full-size pipeline, with `bound`'s verdict where given, as `bench.record_parity`
    stores it (bound None: measured only, as the store's older rows left the waveform)."""
    verdict = {} if bound is None else dict(bound=bound.bound, bound_op=bound.op, within_bound=bound.holds(value))
    add_row(
        run,
        stage="pipeline",
        variant="v2-40k",
        backend=backend,
        audio_seconds=seconds,
        metric=f"parity.{name}",
        value=value,
        unit="",
        reference=reference,
        **verdict,
    )


def test_scaling_and_chunking_tables_from_a_synthetic_store(tmp_path):
    """Report logic on hand-made rows (not measurements): time(5 min)/time(5 s) against 60x, memory at 5 min over
    1 min, per stage and backend of the main variant; chunking variants in their own table with their parity."""
    gib = 2**30
    for stage, variant in (
        ("rmvpe", "e2e"),
        ("rmvpe", "whole"),
        ("rmvpe", "chunked-4096-no-overlap"),
        ("synth", "v2-40k-tile250"),
        ("synth", "v2-40k-whole"),
    ):
        run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
        for backend in ("torch", "mlx"):
            # e2e: 5 s in 1 s, 5 min in 69 s (+15 %); memory 3 GiB at 1 min, 3.3 GiB at 5 min; RSS 4 -> 8 GiB
            times = {5.0: 1.0, 60.0: 12.0, 300.0: 69.0 if variant == "e2e" else 61.0}
            mems = {5.0: 1 * gib, 60.0: 3 * gib, 300.0: 3.3 * gib if variant == "e2e" else 13 * gib}
            for t in (5.0, 60.0, 300.0):
                extra = (
                    {"max_abs": (7.7e-6, f"{backend} e2e")}
                    if variant == "whole"
                    else {"max_abs": (0.93, f"{backend} whole")}
                    if "no-overlap" in variant
                    else {}
                )
                _rows(run, stage, variant, backend, t, times[t], mems[t], 4 * gib if t < 300 else 8 * gib, **extra)
        run.flush(tmp_path, f"{stage}-{variant}")
    doc = files.generate(tmp_path).text
    scaling = doc[doc.index("### Scaling with length") : doc.index("### Memory")]
    rmvpe = [line for line in scaling.splitlines() if line.startswith("| RMVPE")]
    assert len(rmvpe) == 2 and all("`e2e`" in line for line in rmvpe)  # main variant only, one row per backend
    assert all("69.0× (+15 %)" in line and "1.10×" in line and "2.00×" in line for line in rmvpe)
    assert "| RVC synthesis" in scaling and "| HuBERT" not in scaling  # no hubert rows stored
    chunking = doc[doc.index("### Chunking") : doc.index("### Scaling with length")]
    assert "| 5 min   | MLX (cpu)     | `whole`" in chunking and "7.70e-6 vs `mlx e2e`" in chunking
    assert "0.930 vs `torch whole`" in chunking and "`v2-40k-whole`" in chunking
    assert "`e2e`" in chunking  # the default beside the variants it is compared with


def test_lengths_timed_once_show_their_first_call_and_scale_first_call_over_first_call(tmp_path):
    """Report logic on hand-made rows (not measurements): one run times 5 s warm (3 rounds, cold 1.1 s / 2.2 s)
    and 1 min and 5 min once (`--rounds 3,0,0`: cold only). Its tables mark those times as first calls, never as
    warm ones; the scaling ratio takes each length's own estimate (5 s warm, 5 min first call) and says so; the
    speedup at 5 min is first call over first call."""
    gib = 2**30
    run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    for backend, cold5, cold60, cold300 in (("torch", 1.1, 14.0, 60.0), ("mlx", 2.2, 30.0, 150.0)):
        _rows(run, "pipeline", "v2-40k", backend, 5.0, 1.0, gib, gib, cold=cold5)
        _rows(run, "pipeline", "v2-40k", backend, 60.0, math.nan, 2 * gib, 2 * gib, rounds=0, cold=cold60)
        _rows(run, "pipeline", "v2-40k", backend, 300.0, math.nan, 2.2 * gib, 2.6 * gib, rounds=0, cold=cold300)
    run.flush(tmp_path, "pipeline")
    lines = results.lines(store.read(tmp_path).rows)
    once = lines[lines.audio_seconds == 300.0]
    assert once.first_only.all() and (once.rounds == 0).all() and sorted(once["median"]) == [60.0, 150.0]
    assert not lines[lines.audio_seconds == 5.0].first_only.any()
    doc = files.generate(tmp_path).text
    pipeline = doc[doc.index("### Full RVC pipeline") : doc.index("### Component breakdown")]
    assert "60.0 s (first call only)" in pipeline and "150 s (first call only)" in pipeline
    assert "1.01 s [" in pipeline  # 5 s: the warm median, unmarked
    scaling = doc[doc.index("### Scaling with length") : doc.index("### Memory")]
    torch_row, mlx_row = (line for line in scaling.splitlines() if line.startswith("| Full pipeline"))
    assert "59.4× (-1 %), first call / warm" in torch_row and "4.29× (-14 %), first calls" in torch_row
    assert "1.10×" in torch_row and "1.30×" in torch_row
    assert "149× (+148 %), first call / warm" in mlx_row and "5.00× (+0 %), first calls" in mlx_row
    summary = sections(doc)["Summary"]
    # one call a side is no interval: the speedup says so instead of a zero-width (0.400–0.400)
    assert "| 5 min   | 60.0 s (first call only) | 150 s (first call only)  | 0.400× (one call each)" in summary
    assert re.search(r"\| 5 s +\| 1\.01 s +\| 1\.01 s +\| 1\.00× \(0\.980–1\.02\) ", summary)  # 3 a side
    # The gate has no warm rounds to compare at a length timed once: it forms no relative check there.
    from rvc_bench import gate

    rows = store.read(tmp_path).rows
    assert all("300" not in c.subject for c in gate.relative_checks(rows, rows))


def test_scaling_is_formed_inside_one_run(tmp_path):
    """Report logic on hand-made rows: HuBERT's 5 min run measured 5 s too (1 s; 5 min in 60 s), and a newer run
    measured 5 s again (2 s): the tables show the newer 5 s, the scaling ratio stays inside the 5 min row's run.
    RMVPE's 5 min run never measured 5 s: another run's 5 s row is not divided into it."""
    runs = (
        ("a", "2026-01-01T00:00:00Z", "rmvpe", "e2e", {5.0: 1.0}),
        ("b", "2026-01-02T00:00:00Z", "rmvpe", "e2e", {60.0: 12.0, 300.0: 60.0}),
        ("c", "2026-01-03T00:00:00Z", "hubert", "v2-layer12", {5.0: 1.0, 60.0: 12.0, 300.0: 60.0}),
        ("d", "2026-01-04T00:00:00Z", "hubert", "v2-layer12", {5.0: 2.0}),
    )
    for name, started, stage, variant, times in runs:
        run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
        run.started_at = started
        for backend in ("torch", "mlx"):
            for t, time_s in times.items():
                _rows(run, stage, variant, backend, t, time_s, 2**30, 2**30)
        run.flush(tmp_path, name)
    doc = files.generate(tmp_path).text
    scaling = doc.split("### Scaling with length")[1].split("### Memory")[0]
    hubert = [line.split("|") for line in scaling.splitlines() if line.startswith("| HuBERT")]
    rmvpe = [line.split("|") for line in scaling.splitlines() if line.startswith("| RMVPE")]
    assert len(hubert) == len(rmvpe) == 2
    assert all(cells[4].strip() == "60.0× (+0 %)" and cells[5].strip() == "5.00× (+0 %)" for cells in hubert)
    assert all(cells[4].strip() == "–" and cells[5].strip() == "5.00× (+0 %)" for cells in rmvpe)
    assert "| 5 s     | 2.02 s [" in doc  # the newer 5 s HuBERT run is what the HuBERT table shows


def test_a_renamed_variant_does_not_keep_the_tables_on_an_older_run(tmp_path):
    """Report logic on hand-made rows (not measurements): the synthesizer's variant was `v2-40k` in an older run
    and is `v2-40k-tile250` in the newer one, each at one length: the tables show the newer."""
    for variant, started, t in (
        ("v2-40k", "2026-01-01T00:00:00Z", 9.0),
        ("v2-40k-tile250", "2026-02-01T00:00:00Z", 3.0),
    ):
        run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
        run.started_at = started
        for backend in ("torch", "mlx"):
            _rows(run, "synth", variant, backend, 5.0, t, 2**30, 2**30)
        run.flush(tmp_path, f"synth-{variant}")
    summary = sections(files.generate(tmp_path).text)["Summary"]
    assert "RVC synthesis (`v2-40k-tile250`)" in summary and "(`v2-40k`)" not in summary


def test_a_pipeline_whose_audio_disagrees_shows_a_failing_verdict(tmp_path):
    """Report logic on hand-made rows (not measurements): MLX's pipeline at 5 s and 1 min, every pitch bound held
    (no frame apart, cents p95 4e-3) and synthesis given torch's f0 at 110 dB, but the waveform at 2.75 dB SNR at
    1 min (as the store's older rows show). Bounds and verdicts as `bench.record_parity` stores them."""
    bounds = tolerances.bounds("pipeline")
    run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    for backend in ("torch", "mlx"):
        for seconds, snr_db in ((5.0, 66.1), (60.0, 2.75)):
            _rows(run, "pipeline", "v2-40k", backend, seconds, seconds / 5, 2**30, 2**30)
            if backend == "torch":
                continue
            values = dict(snr_db=snr_db, same_f0_snr_db=110.0, frames_apart=0.0, cents_p95=4e-3)
            for name, value in values.items():
                _pipeline_parity(run, seconds, name, value, bounds[name])
    run.flush(tmp_path, "pipeline")
    doc = files.generate(tmp_path).text
    rows = [line for line in sections(doc)["Summary"].splitlines() if line.startswith("| Full pipeline")]
    assert len(rows) == 2 and "pass (4 of 4 within bounds)" in rows[0]
    snr_bound = f"{bounds['snr_db'].op} {bounds['snr_db'].bound:g}"  # the table's, as the report prints it
    assert f"FAIL: mlx snr_db 2.75 (bound {snr_bound})" in rows[1] and "pass" not in rows[1]
    accuracy = doc[doc.index("#### Full pipeline") :]
    snr_row = next(line for line in accuracy.splitlines() if line.startswith("| snr_db "))
    assert f"| {snr_bound} " in snr_row and "66.1 pass" in snr_row and "2.75 **FAIL**" in snr_row
    for name in ("same_f0_snr_db", "frames_apart"):  # the new metrics have their own rows, each judged
        line = next(line for line in accuracy.splitlines() if line.startswith(f"| {name} "))
        assert line.count(" pass") == 2 and "FAIL" not in line


def test_an_unjudged_older_pipeline_row_is_judged_by_todays_table(tmp_path):
    """Hand-made rows as the store's pre-issue-19 rows are: MLX's 5 min pipeline at 5.75 dB SNR stored without a
    verdict (the old rule skipped the waveform where the f0 tracks differed), its pitch accuracy judged and held.
    The document must not call it a pass; a same-backend variant's unjudged value stays measured only."""
    run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    for backend in ("torch", "mlx"):
        _rows(run, "pipeline", "v2-40k", backend, 300.0, 60.0, 2**30, 2**30)
    old_bound = tolerances.Bound("pipeline", tolerances.BENCHMARK, "raw_pitch_accuracy", ">=", 0.99, "then")
    _pipeline_parity(run, 300.0, "snr_db", 5.75)
    _pipeline_parity(run, 300.0, "raw_pitch_accuracy", 0.9996, old_bound)
    _pipeline_parity(run, 300.0, "mean_abs", 0.04)  # no bound today
    _pipeline_parity(run, 300.0, "snr_db", 5.75, reference="mlx whole")
    run.flush(tmp_path, "pipeline")
    par = results.parity(store.read(tmp_path).rows)
    judged = par.set_index(["metric", "reference"]).within_bound
    assert judged[("snr_db", "torch")] == False and judged[("raw_pitch_accuracy", "torch")] == True  # noqa: E712
    assert pd.isna(judged[("mean_abs", "torch")]) and pd.isna(judged[("snr_db", "mlx whole")])
    summary = [
        line
        for line in sections(files.generate(tmp_path).text)["Summary"].splitlines()
        if line.startswith("| Full pipeline")
    ]
    snr = tolerances.bounds("pipeline")["snr_db"]
    assert len(summary) == 1 and f"FAIL: mlx snr_db 5.75 (bound {snr.op} {snr.bound:g})" in summary[0]
    assert "pass" not in summary[0]


def test_a_failing_pitch_row_says_how_many_frames_were_ties(tmp_path):
    """Hand-made rows: MLX's 1 min pipeline with 3 frames apart, 2 of them ties by the reference's margin; the
    summary's FAIL says so, and a row that did not count ties says nothing about them."""
    run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    b = tolerances.bounds("pipeline")["frames_apart"]
    for seconds, tied in ((60.0, 2.0), (300.0, None)):
        for backend in ("torch", "mlx"):
            _rows(run, "pipeline", "v2-40k", backend, seconds, seconds / 5, 2**30, 2**30)
        _pipeline_parity(run, seconds, "frames_apart", 3.0, b)
        if tied is not None:
            _pipeline_parity(run, seconds, "frames_apart_tied", tied)
    run.flush(tmp_path, "pipeline")
    rows = [
        line
        for line in sections(files.generate(tmp_path).text)["Summary"].splitlines()
        if line.startswith("| Full pipeline")
    ]
    assert len(rows) == 2
    assert "frames_apart 3.00 (bound <= 0, 2.00 of them pitch ties at float32)" in rows[0]
    assert "FAIL: mlx frames_apart 3.00 (bound <= 0)" in rows[1] and "ties" not in rows[1]
