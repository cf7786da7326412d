"""Issue #30: one `atomic_path` for every temp-file-then-rename write."""
import os
import subprocess
import sys
import textwrap

import pytest

from toolkit._util.atomic import atomic_path, temp_sibling
from toolkit.errors import MissingFileError
from toolkit.record import write_atomic


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name == f".a.txt.tmp{os.getpid()}"
        tmp.write_text("new")
        assert path.read_text() == "old"  # untouched until the block ends
    assert path.read_text() == "new" and _names(tmp_path) == ["a.txt"]
    write_atomic(path, "newer")  # the record's writer is a user of it
    assert path.read_text() == "newer" and _names(tmp_path) == ["a.txt"]


def test_keep_suffix_for_writers_that_pick_a_format_by_it(tmp_path):
    import numpy as np

    path = tmp_path / "x.npy"
    with atomic_path(path, keep_suffix=True) as tmp:
        assert tmp.suffix == ".npy" and tmp.name.startswith(".x.npy.tmp")
        np.save(tmp, np.arange(3))  # np.save appends .npy to a name without it
    assert np.load(path).tolist() == [0, 1, 2] and _names(tmp_path) == ["x.npy"]


@pytest.mark.parametrize("error", [RuntimeError("mid-write"), KeyboardInterrupt()])
def test_an_exception_mid_write_keeps_the_old_file_and_no_temp(tmp_path, error):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(type(error)):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise error
    assert path.read_text() == "old" and _names(tmp_path) == ["a.txt"]


def test_an_exception_before_anything_is_written(tmp_path):
    path = tmp_path / "a.txt"
    with pytest.raises(OSError):
        with atomic_path(path):
            raise OSError(28, "No space left on device")
    assert _names(tmp_path) == []


def test_a_missing_folder_is_a_clear_error(tmp_path):
    path = tmp_path / "nope" / "a.txt"
    with pytest.raises(MissingFileError, match=r"cannot write .*a\.txt: its folder .*nope does not exist"):
        with atomic_path(path) as tmp:
            tmp.write_text("never")
    assert not (tmp_path / "nope").exists()
    with pytest.raises(FileNotFoundError):  # MissingFileError keeps the built-in base
        write_atomic(path, "never")


def test_a_killed_process_leaves_the_old_file_and_a_hidden_temp_that_resume_removes(tmp_path):
    """os._exit inside the block: no cleanup runs, so the temporary `.NAME.tmpPID` stays
    (hidden, never read); the old file is whole. The run record's resume deletes `.*.tmp*`."""
    path = tmp_path / "rounds.jsonl"
    path.write_text("old\n")
    script = textwrap.dedent(f"""
        import os
        from toolkit._util.atomic import atomic_path
        with atomic_path({str(path)!r}) as tmp:
            tmp.write_text("half")
            os._exit(9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert path.read_text() == "old\n"
    leftovers = [p.name for p in tmp_path.glob(".*.tmp*")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".rounds.jsonl.tmp")  # the pattern the resume cleans
    assert _names(tmp_path) == sorted(["rounds.jsonl", *leftovers])


def test_temp_sibling_names():
    from pathlib import Path

    assert temp_sibling(Path("/d/f.h5")).name == f".f.h5.tmp{os.getpid()}"
    assert temp_sibling(Path("/d/f.h5"), keep_suffix=True).name == f".f.h5.tmp{os.getpid()}.h5"
