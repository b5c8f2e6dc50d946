"""Writing files safely: atomic replacement with the user's umask, and the checks every user-named output passes.

Every command that writes a file the user named (`convert -o`, `infer -o`, `report -o`, `run --report`) calls
`check_output` before any work starts, so a refused output costs nothing and nothing is half-written:
the output must not be an input (same file by inode, so links count too), not an existing file unless the
caller was told to overwrite (`--force`), not a folder or a device, and its folder must be creatable and writable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


class OutputError(ValueError):
    """An output path that would destroy something or cannot be written: the message names the path."""


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; restored at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file.

    The file gets the mode a plain open() would give (0666 minus the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def check_output(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), force: bool = False, flag: str = "--force"
) -> Path:
    """Refuse an output path that is an input, an existing file (unless `force`), not a regular file, or not
    writable. Returns the path. `flag` names the option that allows overwriting, for the message."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder: name a file")
    if path.exists():
        if not path.is_file():
            raise OutputError(f"output {path} exists and is not a regular file")
        for src in inputs:
            if src is not None and Path(src).exists() and os.path.samefile(path, src):
                raise OutputError(f"output {path} is the input file {src}: choose another output")
        if not force:
            raise OutputError(f"output {path} exists: choose another name, or pass {flag} to overwrite it")
    _check_writable(_nearest_existing(path), f"output {path}")
    return path


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """A folder files can be written into: an existing writable folder, or one that can be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is not a folder")
    _check_writable(path if path.exists() else _nearest_existing(path), f"{what} {path}")
    return path


def _check_writable(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise OutputError(f"{what}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: folder {folder} is not writable")
