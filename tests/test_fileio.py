"""Output files: atomic writes with the user's umask, and the checks every user-named output passes."""

import os
import stat

import pytest

from rvc_bench import fileio


def test_atomic_write_uses_the_umask_and_leaves_no_temp_file(tmp_path):
    old = os.umask(0o027)
    try:
        fileio.atomic_write_bytes(tmp_path / "a" / "f.bin", b"one")
        fileio.atomic_write_bytes(tmp_path / "a" / "f.bin", b"two")
    finally:
        os.umask(old)
    path = tmp_path / "a" / "f.bin"
    assert path.read_bytes() == b"two" and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_check_output(tmp_path):
    src, existing, folder, afile = tmp_path / "in.wav", tmp_path / "old.wav", tmp_path / "d", tmp_path / "afile"
    for p in (src, existing, afile):
        p.write_bytes(b"x")
    folder.mkdir()
    (tmp_path / "link.wav").symlink_to(src)
    os.link(src, tmp_path / "hard.wav")
    assert fileio.check_output(tmp_path / "new" / "o.wav", [src]) == tmp_path / "new" / "o.wav"
    assert fileio.check_output(existing, [src], force=True) == existing
    for path, force, message in [
        (existing, False, "exists: choose another name, or pass --force"),
        (src, True, "is the input file"),
        (tmp_path / "link.wav", True, "is the input"),
        (tmp_path / "hard.wav", True, "is the input"),
        (folder, True, "is a folder"),
        (afile / "o.wav", False, "afile is not a folder"),
        (tmp_path / "null", True, "not a regular file"),
    ]:
        if path.name == "null":
            os.mkfifo(path)
        with pytest.raises(fileio.OutputError, match=message):
            fileio.check_output(path, [src], force=force)


def test_check_folder(tmp_path):
    (tmp_path / "afile").write_bytes(b"x")
    assert fileio.check_folder(tmp_path / "new" / "store", "--store") == tmp_path / "new" / "store"
    with pytest.raises(fileio.OutputError, match="--store .*afile is not a folder"):
        fileio.check_folder(tmp_path / "afile", "--store")
    with pytest.raises(fileio.OutputError, match="afile is not a folder"):
        fileio.check_folder(tmp_path / "afile" / "sub", "--store")
