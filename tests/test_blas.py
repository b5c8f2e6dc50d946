"""The BLAS behind each CPU backend: the preload reaches MLX's process and never torch's, detection reads what a
process really mapped, `--mlx-blas bundled` opts out, and doctor says how to fix what is missing."""

import json
import os
import subprocess
import sys

import pytest

from rvc_bench import blas, cli
from rvc_bench.backends import get_backend

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="LD_PRELOAD and /proc/self/maps are Linux's")
# On Linux x86_64 the mkl wheel is a dependency (pyproject.toml); elsewhere a preload needs a system OpenBLAS.
needs_preload = pytest.mark.skipif(
    sys.platform != "linux" or blas.select("auto") is None,
    reason="no BLAS to preload here (mkl wheel or system OpenBLAS)",
)

# Run in a child: which BLAS files it mapped, and what the detection says, after one matmul in each framework.
CHILD = """
import json, sys
from rvc_bench import blas
out = {}
if sys.argv[1] == "mlx":
    out.update(blas.mlx_cpu_blas())
else:
    out.update(blas.torch_cpu_blas())
out["maps"] = [p for p in blas.mapped_libraries() if "blas" in p or "mkl" in p]
print(json.dumps(out))
"""


def child(backend: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, backend], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@needs_preload
def test_preload_reaches_the_mlx_process_and_not_the_torch_process():
    preload = blas.select("auto")
    mlx = child("mlx", blas.process_env("mlx", "auto"))
    assert preload.path in mlx["maps"]
    assert mlx["mlx_cpu_blas_path"] == preload.path and mlx["mlx_cpu_blas"].endswith("preloaded")
    assert mlx["mlx_cpu_blas"].startswith({"mkl": "MKL", "openblas": "OpenBLAS"}[preload.name])
    if preload.name == "mkl":  # the threading layer MKL_ENV asks for is the one it loaded
        assert f"{preload.env['MKL_THREADING_LAYER']} threading" in mlx["mlx_cpu_blas"]
    # torch's process: started from an environment that already carries the preload, it still gets none of it.
    torch = child("torch", blas.process_env("torch", "auto", base=blas.process_env("mlx", "auto")))
    assert preload.path not in torch["maps"]
    assert torch["torch_blas"] == "mkl (torch's own build)" and torch["torch_cpu_sgemm_gflops"] > 0


@needs_preload
def test_detection_names_a_preload_that_reaches_torch():
    # What `pytest suites/` would record if someone preloaded the BLAS into a process that also times torch.
    preload = blas.select("auto")
    env = {**os.environ, "LD_PRELOAD": preload.path, **preload.env}
    torch = child("torch", env)
    assert (
        f"sgemm_ is interposed by a preloaded {blas.name_library(preload.path)} ({preload.path})" in torch["torch_blas"]
    )


@linux_only
def test_bundled_opts_out_and_detection_names_the_bundled_library():
    env = blas.process_env("mlx", "bundled", base={**os.environ, "LD_PRELOAD": blas.mkl_library() or ""})
    assert blas.MARKER not in env and not any(p in env.get("LD_PRELOAD", "") for p in ("libmkl", "libopenblas"))
    mlx = child("mlx", env)
    assert mlx["mlx_cpu_blas"] == "reference BLAS bundled with mlx[cpu]"
    assert "/mlx_cpu.libs/libblas" in mlx["mlx_cpu_blas_path"] and mlx["mlx_cpu_blas_path"] in mlx["maps"]
    assert mlx["mlx_cpu_sgemm_gflops"] > 0


@linux_only
def test_process_env_keeps_unrelated_preloads_and_names_missing_libraries(monkeypatch):
    base = {"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"}
    assert blas.process_env("torch", "auto", base=base) == base
    assert "/opt/other.so" in blas.process_env("mlx", "auto", base=base)["LD_PRELOAD"]
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    monkeypatch.setattr(blas, "system_openblas", lambda: None)
    assert blas.select("auto") is None and blas.process_env("mlx", "auto", base=base) == base
    with pytest.raises(blas.BlasError, match=r"pip install mkl"):
        blas.select("mkl")
    with pytest.raises(blas.BlasError, match=r"apt-get install libopenblas0-pthread"):
        blas.select("openblas")
    with pytest.raises(blas.BlasError, match=r"unknown --mlx-blas 'atlas'"):
        blas.select("atlas")


@linux_only
def test_run_with_a_missing_blas_is_a_clear_error_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(blas, "system_openblas", lambda: None)
    store = tmp_path / "store"
    code = cli.main(["run", "--stages", "mel", "--lengths", "0.5", "--mlx-blas", "openblas", "--store", str(store)])
    assert code == 2 and "no system OpenBLAS found" in capsys.readouterr().err
    assert not store.exists()


class Restarted(Exception):
    pass


@linux_only
@pytest.mark.parametrize(
    "backend,choice,marked,restarts",
    [
        ("mlx", "auto", False, True),
        ("mlx", "auto", True, False),
        ("mlx", "bundled", False, False),
        ("torch", "auto", False, False),
    ],
)
def test_infer_restarts_itself_once_for_mlx_only(backend, choice, marked, restarts, tmp_path, monkeypatch, capsys):
    if restarts and blas.select(choice) is None:
        pytest.skip("no BLAS to preload here")
    calls = []

    def execve(path, argv, env):
        calls.append((argv, env))
        raise Restarted

    monkeypatch.setattr(os, "execve", execve)
    if marked:
        monkeypatch.setenv(blas.MARKER, "mkl")
    else:
        monkeypatch.delenv(blas.MARKER, raising=False)
    # A missing voice stops the command right after the point where it would restart.
    argv = [
        "rvc-bench",
        "infer",
        str(tmp_path / "nope.pth"),
        "in.wav",
        "-o",
        "out.wav",
        "--backend",
        backend,
        "--mlx-blas",
        choice,
        "--synthetic-models",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    if restarts:
        with pytest.raises(Restarted):
            cli.main()
        ((args, env),) = calls
        assert args == [sys.executable, "-m", "rvc_bench.cli", *argv[1:]]
        assert env == blas.process_env("mlx", choice) and env[blas.MARKER] == blas.select(choice).name
    else:
        assert cli.main() == 2 and "voice model not found" in capsys.readouterr().err
        assert calls == []
    # A caller of main() keeps its own process: no restart whatever the backend.
    monkeypatch.delenv(blas.MARKER, raising=False)
    before = len(calls)
    assert cli.main(argv[1:]) == 2 and len(calls) == before


@needs_preload
def test_infer_with_mlx_runs_on_the_preloaded_blas(tmp_path):
    import soundfile as sf

    from rvc_bench import fixtures
    from rvc_bench.synth import synthetic

    voice = synthetic.ensure_checkpoint(fixtures.cache_dir(), "tiny")
    sf.write(tmp_path / "in.wav", fixtures.clip(0.5).audio, 16000, subtype="FLOAT")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rvc_bench.cli",
            "infer",
            str(voice),
            str(tmp_path / "in.wav"),
            "-o",
            str(tmp_path / "out.wav"),
            "--model-size",
            "tiny",
            "--synthetic-models",
            "--backend",
            "mlx",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != blas.MARKER},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"on mlx:cpu (BLAS: {blas.name_library(blas.select('auto').path)}" in proc.stdout
    assert (tmp_path / "out.wav").is_file()


def test_doctor_names_the_fix_for_each_missing_piece(monkeypatch, capsys):
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    monkeypatch.setattr(blas, "system_openblas", lambda: None)
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "`rvc-bench run` measures: torch:" in out and "GFLOP/s" in out
    if sys.platform == "linux":
        assert "torch:mps: none here: needs a Mac with Apple Silicon" in out
        fix = "pip install mkl" if os.uname().machine == "x86_64" else "apt-get install libopenblas0-pthread"
        assert f"fast BLAS for MLX: {fix}" in out


@needs_preload
def test_doctor_measures_the_preloaded_blas_and_gives_the_pytest_command(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    preload = blas.select("auto")
    assert "mlx:cpu in `rvc-bench run`" in out and preload.path in out
    env = " ".join(f"{k}={v}" for k, v in {"LD_PRELOAD": preload.path, **preload.env}.items())
    assert f"{env} python -m pytest suites/ --benchmark-only --backends mlx" in out


def test_pytest_header_names_each_backends_blas():
    # The session is lazy: backends (and their BLAS probes) exist once benchmarks are collected, so collect one.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/test_bench_mel.py", "--collect-only", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", blas.MARKER)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    devices = {name: get_backend(name).device for name in ("torch", "mlx")}
    if devices["mlx"] == "cpu":
        assert f"rvc-bench: mlx:cpu BLAS: {blas.mlx_cpu_blas()['mlx_cpu_blas']} (" in proc.stdout
        if blas.select("auto") is not None:  # pytest run directly keeps the bundled BLAS, and says how to fix it
            assert "`rvc-bench doctor` prints the command" in proc.stdout
    if devices["torch"] == "cpu":
        assert "rvc-bench: torch:cpu BLAS: " in proc.stdout
