"""Device choice and descriptions: an unavailable device asked for by name is an error, never a fallback."""

import subprocess
import sys

import pytest

from rvc_bench import backends
from rvc_bench.backends import BackendError, get_backend


@pytest.mark.parametrize("name,device", [("torch", "mps"), ("torch", "cuda"), ("mlx", "gpu")])
def test_unavailable_device_is_an_error(name, device):
    available = backends.torch_devices() if name == "torch" else backends.mlx_devices()
    if device in available:
        pytest.skip(f"{name}:{device} exists on this machine")
    with pytest.raises(BackendError, match=f"{device!r} is not available here: .+"):
        get_backend(name, device)


def test_unknown_device_and_backend():
    with pytest.raises(BackendError, match="unknown torch device 'tpu'"):
        get_backend("torch", "tpu")
    with pytest.raises(BackendError, match="unknown backend 'jax'"):
        get_backend("jax")


def test_auto_picks_the_first_available_in_order():
    assert get_backend("torch").device == backends.torch_devices()[0]
    assert get_backend("mlx").device == backends.mlx_devices()[0]


def test_describe_names_the_device_that_runs():
    for name in ("torch", "mlx"):
        d = get_backend(name, "cpu").describe()
        assert d["device"] == "cpu" and d["device_name"]
    mlx = get_backend("mlx", "cpu").describe()
    assert mlx["mlx_cpu_blas"] != "unknown" or sys.platform != "linux"
    assert mlx["mlx_cpu_sgemm_gflops"] > 0


def test_pytest_option_for_missing_device_is_a_clear_error(tmp_path):
    if "mps" in backends.torch_devices():
        pytest.skip("MPS exists here")
    proc = subprocess.run([sys.executable, "-m", "pytest", "suites/test_mel.py", "--torch-device", "mps", "-q",
                           "-p", "no:cacheprovider"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "torch device 'mps' is not available here" in proc.stderr + proc.stdout


def test_machine_info_has_versions():
    info = backends.machine_info()
    assert info["torch"] and info["mlx"] and info["cpu_count"] >= 1 and info["ram_bytes"] > 0
