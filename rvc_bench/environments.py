"""Python environments for another commit's code (`rvc-bench ab`): its dependency spec, whether this interpreter
satisfies it, and otherwise a virtual environment made once per spec and cached."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENVS_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rvc-bench" / "envs"
READY = "rvc-bench-env.json"  # written into a cached environment once its install succeeded


class SpecError(RuntimeError):
    """A commit without a readable dependency list: that commit cannot be measured."""


class InstallError(ValueError):
    """An environment that cannot be installed: bad input, one line."""


def dependencies(tree: Path) -> list[str]:
    """The commit's dependency spec: [project].dependencies of its pyproject.toml."""
    path = tree / "pyproject.toml"
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))["project"]["dependencies"]
        for line in spec:
            Requirement(line)
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError, InvalidRequirement) as err:
        raise SpecError(f"no readable dependency list in its pyproject.toml ({type(err).__name__}: {err})") from None
    return list(spec)


def unmet(spec: list[str]) -> list[str]:
    """The requirements of `spec` (markers evaluated here) that this interpreter's installed distributions do not
    satisfy, one line each; [] when it can run the commit as it is."""
    out = []

    def check(req: Requirement) -> None:
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            out.append(f"{req.name} is not installed")
            return
        if not req.specifier.contains(version, prereleases=True):
            out.append(f"{req.name} {version} does not satisfy {req}")
            return
        for extra in sorted(req.extras):  # e.g. mlx[cpu]: the requirements that extra adds
            for text in metadata.requires(req.name) or []:
                sub = Requirement(text)
                if sub.marker is not None and "extra" in str(sub.marker) and sub.marker.evaluate({"extra": extra}):
                    sub.marker = None
                    check(sub)

    for line in spec:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            check(req)
    return out


def spec_key(spec: list[str]) -> str:
    """The cache key of an environment: the dependency spec (order-free) and the interpreter and platform."""
    text = "\n".join(sorted(str(Requirement(line)) for line in spec))
    where = f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]} {sys.platform} {platform.machine()}"
    return hashlib.sha256(f"{where}\n{text}".encode()).hexdigest()[:16]


def cached_env(spec: list[str], envs_dir: Path) -> Path:
    """A virtual environment with `spec` installed, made once per dependency spec under envs_dir/<key> and reused;
    the commit's own code runs from its worktree (PYTHONPATH), so one environment serves every commit with the same
    spec. Returns its interpreter."""
    import fcntl
    import venv

    folder = envs_dir / spec_key(spec)
    python = folder / "bin" / "python"
    envs_dir.mkdir(parents=True, exist_ok=True)
    with open(envs_dir / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two jobs building the same environment wait for each other
        if (folder / READY).is_file():
            return python
        shutil.rmtree(folder, ignore_errors=True)  # a half-built one from an interrupted install
        print(
            f"rvc-bench ab: creating the environment {folder} ({len(spec)} requirements; once per dependency spec)",
            flush=True,
        )
        venv.EnvBuilder(with_pip=True).create(folder)
        requirements = folder / "requirements.txt"
        requirements.write_text("".join(f"{line}\n" for line in spec))
        proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)])
        if proc.returncode != 0:
            raise InstallError(
                f"installing {requirements} into {folder} failed (pip exited with status "
                f"{proc.returncode}; its output is above)"
            )
        (folder / READY).write_text(json.dumps({"spec": spec}, indent=1) + "\n")
    return python
