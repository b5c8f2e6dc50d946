"""The document's "Optimisation impact" on hand-made rows (not measurements): each variant against its backend's
fp32 row of the same run, its accuracy verdict, the original's expectation judged by the interval, and the variant
rows kept out of the stage tables."""

from helpers import add_row, add_times

from rvc_bench import store
from rvc_bench.report import files


def _line(run, variant, backend, seconds_per_call, dtype="float32", rel_l2=None, bound=None, metric="rel_l2"):
    """A HuBERT line; its parity value (named `metric`) stored with the verdict against `bound`, or none."""
    common = dict(stage="hubert", variant=variant, backend=backend, audio_seconds=5.0, dtype=dtype)
    add_times(run, [seconds_per_call * (1 + 0.01 * i) for i in range(7)], **common)
    add_row(run, metric="mem_framework_peak", value=2**30 * seconds_per_call, unit="bytes", **common)
    if rel_l2 is not None:
        verdict = {} if bound is None else dict(bound=bound, bound_op="<=", within_bound=rel_l2 <= bound)
        add_row(run, metric=f"parity.{metric}", value=rel_l2, unit="", reference="torch", **common, **verdict)


def test_variants_are_judged_against_their_own_fp32_row_and_the_original_claim(tmp_path):
    run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    _line(run, "v2-layer12", "torch", 1.0)
    _line(run, "v2-layer12", "mlx", 1.0, rel_l2=1e-6, bound=1e-4)
    _line(run, "v2-layer12+q8", "mlx", 0.5, "int8 weights", rel_l2=9e-3, bound=3e-2)  # 2x: "1.5-2x" held
    _line(run, "v2-layer12+fp16", "mlx", 4.0, "float16", rel_l2=8e-3, bound=5e-3)  # 0.25x, and past its bound
    run.flush(tmp_path, "hubert")
    doc = files.generate(tmp_path).text
    section = doc[doc.index("### Optimisation impact") :]
    section = section[: section.index("\n### ", 5)]
    q8 = next(line for line in section.splitlines() if "`q8`" in line)
    fp16 = next(line for line in section.splitlines() if "`fp16`" in line)
    assert "(int8 weights)" in q8 and "| 2.00× (" in q8 and "rel_l2 0.00900 ok" in q8
    assert "1.5-2x: held on MLX (cpu)" in q8
    assert "0.250× (" in fp16 and "**FAIL**" in fp16 and "1.3-1.5x: not held on MLX (cpu)" in fp16
    assert "4.00× fp32" in fp16  # memory against the fp32 row
    accuracy = doc[doc.index("### Numerical accuracy") :]
    accuracy = accuracy[: accuracy.index("\n### ", 5)]
    assert "`v2-layer12+fp16` 5 s" in accuracy  # the accuracy tables show each variant, failing ones too
    assert "v2-layer12+q8" not in doc.replace(section, "").replace(accuracy, "")  # the stage tables keep fp32
    assert "-optimisation.png" in doc


def test_without_variants_the_section_says_how_to_measure_them(tmp_path):
    run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    _line(run, "v2-layer12", "torch", 1.0)
    run.flush(tmp_path, "hubert")
    doc = files.generate(tmp_path).text
    assert "Not in the store: no optimisation variant" in doc and "--variants fp32,fp16" in doc
    assert "-optimisation.png" not in doc


def test_each_backend_is_read_against_the_best_pytorch_that_keeps_its_bounds(tmp_path):
    """The best PyTorch is its fastest row within bounds: int8 is faster but past its bound, so `compiled` is the
    one MLX is read against; the twin ratio and the best ratio differ accordingly. MLX's q4 is faster still, but
    no bound judged it: it is not MLX's fastest within bounds."""
    run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    _line(run, "v2-layer12", "torch", 2.0)
    _line(run, "v2-layer12+compiled", "torch", 1.0, rel_l2=1e-6, bound=1e-4)
    _line(run, "v2-layer12+int8", "torch", 0.25, "int8 weights", rel_l2=0.5, bound=6e-2)
    _line(run, "v2-layer12", "mlx", 1.6, rel_l2=1e-6, bound=1e-4)
    _line(run, "v2-layer12+compiled", "mlx", 0.8, rel_l2=1e-6, bound=1e-4)
    _line(run, "v2-layer12+q4", "mlx", 0.4, "int4 weights", rel_l2=0.9, metric="cosine")  # no bound judges it
    run.flush(tmp_path, "hubert")
    doc = files.generate(tmp_path).text
    best = doc[doc.index("#### Against the best PyTorch") :]
    line = next(row for row in best.splitlines() if "MLX (cpu)" in row)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "`v2-layer12+compiled` (cpu) 1.03 s" and cells[4] == "`v2-layer12+compiled` 824 ms"
    assert cells[5].startswith("2.50× (") and cells[6].startswith("1.25× (") and cells[7].startswith("0.625× (")


def test_a_newer_variant_run_on_one_backend_keeps_the_others_rows(tmp_path):
    """Variants are measured a backend at a time: ONNX Runtime's newer `+fp16` run leaves MLX's `+fp16` row (of an
    older run) in the table, each against its own run's fp32 row."""
    older = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    _line(older, "v2-layer12", "torch", 1.0)
    _line(older, "v2-layer12", "mlx", 1.0, rel_l2=1e-6, bound=1e-4)
    _line(older, "v2-layer12+fp16", "mlx", 4.0, "float16", rel_l2=1e-3, bound=5e-3)
    older.flush(tmp_path, "hubert")
    newer = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    _line(newer, "v2-layer12", "onnx", 1.0, rel_l2=1e-6, bound=1e-4)
    _line(newer, "v2-layer12+fp16", "onnx", 2.0, "float16", rel_l2=1e-3, bound=5e-3)
    newer.flush(tmp_path, "hubert")
    doc = files.generate(tmp_path).text
    section = doc[doc.index("### Optimisation impact") :]
    fp16 = [line for line in section[: section.index("\n### ", 5)].splitlines() if "`fp16`" in line]
    assert len(fp16) == 2 and "| 0.250× (" in fp16[0] + fp16[1] and "| 0.500× (" in fp16[0] + fp16[1]


def test_a_variant_stored_before_its_bound_existed_is_judged_by_todays_table(tmp_path):
    """hubert variant-q4 rel_l2 <= 0.3 in references/parity_tolerances.csv: a row stored without a verdict shows
    failing it, instead of showing no verdict at all."""
    run = store.Run(machine_id="box", model_size="full", meta={"machine": {"cpu": "x"}})
    _line(run, "v2-layer12", "torch", 1.0)
    _line(run, "v2-layer12", "mlx", 1.0, rel_l2=1e-6, bound=1e-4)
    _line(run, "v2-layer12+q4", "mlx", 0.5, "int4 weights", rel_l2=0.9)
    run.flush(tmp_path, "hubert")
    doc = files.generate(tmp_path).text
    section = doc[doc.index("### Optimisation impact") :]
    q4 = next(line for line in section.splitlines() if "`q4`" in line)
    assert "rel_l2 0.900 **FAIL**" in q4
