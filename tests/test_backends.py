"""Device choice and descriptions: an unavailable device asked for by name is an error, never a fallback."""

import subprocess
import sys

import pytest
from helpers import pytest_child

from rvc_bench import machine
from rvc_bench.backends import BACKENDS, BackendError, get_backend


@pytest.mark.parametrize(
    "name,device", [("torch", "mps"), ("torch", "cuda"), ("mlx", "gpu"), ("onnx", "cuda"), ("onnx", "coreml")]
)
def test_unavailable_device_is_an_error(name, device):
    available = machine.available_devices(name)
    if device in available:
        pytest.skip(f"{name}:{device} exists on this machine")
    with pytest.raises(BackendError, match=f"{device!r} is not available here: .+"):
        get_backend(name, device)


def test_unknown_device_and_backend():
    with pytest.raises(BackendError, match="unknown torch device 'tpu'"):
        get_backend("torch", "tpu")
    with pytest.raises(BackendError, match="unknown onnx device 'tpu': choose one of coreml, cuda, cpu"):
        get_backend("onnx", "tpu")
    with pytest.raises(BackendError, match="unknown backend 'jax'"):
        get_backend("jax")


def test_auto_picks_the_first_available_in_order():
    for name in BACKENDS:
        assert get_backend(name).device == machine.available_devices(name)[0]


def test_describe_names_the_device_that_runs():
    for name in BACKENDS:
        d = get_backend(name, "cpu").describe()
        assert d["device"] == "cpu" and d["device_name"]
    mlx = get_backend("mlx", "cpu").describe()
    assert mlx["mlx_cpu_blas"] != "unknown" or sys.platform != "linux"
    assert mlx["mlx_cpu_sgemm_gflops"] > 0


def test_pytest_option_for_missing_device_is_a_clear_error(tmp_path):
    if "mps" in machine.torch_devices():
        pytest.skip("MPS exists here")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "suites/test_bench_mel.py",
            "--torch-device",
            "mps",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "torch device 'mps' is not available here" in proc.stderr + proc.stdout


def test_machine_info_reads_versions_without_importing_a_framework():
    code = (
        "import sys; from rvc_bench import machine; info = machine.machine_info(); "
        "assert info['libraries']['torch'] and info['libraries']['mlx'], info; "
        "assert info['cpu_count'] >= 1 and info['ram_bytes'] > 0; "
        "loaded = [m for m in ('torch', 'mlx', 'mlx.core') if m in sys.modules]; assert not loaded, loaded"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_machine_id_is_stable_and_the_label_makes_another_machine():
    info = machine.machine_info()
    assert machine.machine_id(info) == machine.machine_id(dict(info, hostname="elsewhere"))  # no hostname in it
    other = machine.machine_id(info, "ci-box")
    assert other != machine.machine_id(info) and other.startswith("ci-box-")
    with pytest.raises(ValueError, match="machine label"):
        machine.machine_label("no spaces allowed")


def test_a_session_without_benchmarks_builds_no_backend(tmp_path):
    """The plugin is lazy: no framework import, no MLX limits, no BLAS probe, no git, unless a benchmark runs."""
    (tmp_path / "test_plain.py").write_text(
        "import sys\n"
        "def test_nothing_framework_related_happened():\n"
        "    assert not [m for m in ('torch', 'mlx', 'mlx.core') if m in sys.modules]\n"
    )
    proc = pytest_child("-p", "rvc_bench.pytest_plugin", tmp_path / "test_plain.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
