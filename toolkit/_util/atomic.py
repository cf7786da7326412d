"""Atomic file replacement: a killed process leaves the old file or the new one, never half a file.

    with atomic_path(path) as tmp:
        np.save(tmp, array)          # or tmp.write_text(...), torch.save(..., tmp), ...

The block writes a hidden sibling `.NAME.tmpPID` (the same folder, so the final `os.replace`
is atomic); on success it replaces `path`, on any exception (KeyboardInterrupt and a full disk
included) the temporary file is removed and `path` is untouched. Only a process killed outright
(SIGKILL, os._exit) inside the block leaves its temporary file behind: a hidden `.*.tmp*` file,
never read, that the run record's resume removes (`toolkit.record.RunWriter`) and a later write
of the same path by the same pid replaces.

No fsync: that guards against power loss, not against the killed or pre-empted processes that
resuming is for, and it cost the probe loop ~0.3 s per 64 rounds.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from toolkit.errors import MissingFileError


def temp_sibling(path: str | Path, *, keep_suffix: bool = False) -> Path:
    """The hidden temporary name of `path`: `.NAME.tmpPID`, plus `path`'s suffix with
    `keep_suffix` (for writers that pick a format by it, or append one: np.save, savefig)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix if keep_suffix else ''}")


@contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; replace `path` with it when the block succeeds.

    Args:
        path: the file to write; its folder must exist.
        keep_suffix: end the temporary name with `path`'s suffix (`.npy`, `.png`, ...).

    Raises:
        MissingFileError: `path`'s folder does not exist (nothing is written).
        FileNotFoundError: the block succeeded but wrote nothing at the temporary path.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> out = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("new")
        >>> out.read_text(), [p.name for p in out.parent.iterdir()]
        ('new', ['a.txt'])
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise MissingFileError(f"cannot write {path}: its folder {path.parent} does not exist")
    tmp = temp_sibling(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C, a kill signal turned exception: no temporary file left behind
        tmp.unlink(missing_ok=True)
        raise

