"""The project's reference files (references/: published figures, parity bounds) wherever rvc-bench runs from.

An installed wheel carries them as the package data `rvc_bench.references` (pyproject.toml maps the top-level
references/ folder there); a source checkout that is merely on sys.path reads the folder itself.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent / "references"


def reference(name: str) -> Traversable:
    """references/<name>: the checkout's folder when running from a source tree, else the installed package data."""
    if (CHECKOUT / name).is_file() and (CHECKOUT.parent / "pyproject.toml").is_file():
        return CHECKOUT / name
    return resources.files("rvc_bench.references").joinpath(name)
