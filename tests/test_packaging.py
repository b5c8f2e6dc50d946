"""A normal (non-editable) install carries the references as package data, found with importlib.resources."""

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_every_module_and_the_references(tmp_path):
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("rvc_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rvc_bench").rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel (pyproject packages list?): {sorted(modules - names)}"
    references = {f"rvc_bench/references/{p.name}" for p in (ROOT / "references").glob("*.csv")}
    assert references and references <= names
    # Unpacked as pip installs it, away from the checkout: the bounds and the published figures load through
    # importlib.resources.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import rvc_bench, rvc_bench.tolerances as t, rvc_bench.report.files as r; "
        f"assert rvc_bench.__file__.startswith({str(site)!r}), rvc_bench.__file__; "
        "assert t.bounds('pipeline') and len(r.published()) > 10"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
