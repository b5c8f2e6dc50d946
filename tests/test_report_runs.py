"""The report's Runs table (rvc_bench.report.summary.runs_section) on hand-made runs: one line per backend, the
run's own cells on its first line only, the BLAS and the allocator in their own columns."""

from helpers import add_times, sections

from rvc_bench import measure, store
from rvc_bench.report import files

TORCH = {"label": "torch:cpu", "backend": "torch", "torch_version": "2.13.0+cpu", "torch_blas": "mkl (own)"}
MLX = {"label": "mlx:cpu", "backend": "mlx", "mlx_version": "0.32.4", "mlx_cpu_blas": "OpenBLAS 0.3.30"}


def test_each_backend_of_a_run_has_its_own_short_line(tmp_path):
    run = store.Run(machine_id="m-1", model_size="tiny", meta={"machine": {"cpu": "test"}})
    for backend, desc in (("torch", TORCH | {"torch_cpu_sgemm_gflops": 51.23}), ("mlx", MLX)):
        add_times(run, [1.0, 1.1, 1.2], stage="mel", variant="log-mel-128", backend=backend, audio_seconds=0.5)
        run.flush(tmp_path, backend, {"backend": desc | {"allocator": measure.KEEP_FREED}})
    lines = [line for line in sections(files.generate(tmp_path).text)["Runs"].splitlines() if line.startswith("| ")]
    header, *rows = (line.split("|")[1:-1] for line in lines)
    header = [c.strip() for c in header]
    assert header[-5:] == ["backend", "version", "BLAS", "allocator", "status"]
    cells = [dict(zip(header, (c.strip() for c in row))) for row in rows if not set("".join(row)) <= set(":- ")]
    assert [c["backend"] for c in cells] == ["mlx:cpu", "torch:cpu"]
    assert cells[0]["run"] == f"`{run.run_id}`" and cells[1]["run"] == "" and cells[1]["status"] == ""
    assert cells[1]["version"] == "2.13.0+cpu" and cells[1]["BLAS"] == "mkl (own), sgemm 51.2 GFLOP/s"
    assert cells[0]["BLAS"] == "OpenBLAS 0.3.30" and cells[0]["allocator"] == "glibc malloc, freed memory kept"
