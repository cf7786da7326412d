"""One writer per run directory or cache: an advisory `flock` on a lock file.

The kernel releases a flock when its process dies, however it dies, so a lock left by a
killed process never blocks the next writer; no stale-lock timeouts are needed. The file
holds the holder's pid, host, start time, command line and working folder, for the refusal
message, which names the command holding it and what resolves the clash. (flock does not
reach across hosts on every network filesystem; on NFS, use one output folder per job.)
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from toolkit.errors import LockedError  # noqa: F401  (raised here; defined with the others)


OUTPUT_HINT = "Wait for it to finish (or stop it), or give this command another output folder (--out)."
CACHE_HINT = ("A cache is shared by every command that reads it, whatever their --out: wait for that command to "
              "finish writing it and rerun this one (it then reuses the cache), or give this one a cache of its own "
              "(ALTK_CACHE=/another/folder for the default caches), which computes it again.")


def _command() -> str:
    """This process's command line, shortened (a pool worker's is its parent's: spawn copies sys.argv)."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    text = " ".join(shlex.quote(a) for a in argv)
    return text if len(text) <= 300 else text[:297] + "..."


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the folder it started in was removed
        return ""


@contextlib.contextmanager
def exclusive(target: str | Path, what: str, *, directory: bool = False, hint: str | None = None,
              wait=None):
    """Hold a lock on `target` for the block's duration: `<target>/.lock` for a directory
    (created if needed), else the sibling `<target>.lock`. The lock file stays (removing
    it would let two writers lock two different files). A refusal names the command holding
    the lock and ends with `hint` (default: for a directory, an output folder's `OUTPUT_HINT`;
    for a file, a shared cache's `CACHE_HINT`). `wait`: instead of refusing, say so through
    this callable (or silently, with `True`) and block until the holder lets go; for a shared
    cache, whose writer re-checks what the holder finished once it has the lock."""
    target = Path(target)
    created = directory and not target.exists()
    if directory:
        target.mkdir(parents=True, exist_ok=True)
    lock = target / ".lock" if directory else target.with_name(target.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace") or "{}"
            try:
                h = json.loads(holder)
                who = f"pid {h['pid']} on {h['host']}, since {h['started']}"
                if h.get("command"):
                    who += f" (`{h['command']}`{', in ' + h['cwd'] if h.get('cwd') else ''})"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            if not wait:
                hint = hint or (OUTPUT_HINT if directory else CACHE_HINT)
                raise LockedError(f"{what} {target} is being written by {who}. {hint}") from None
            if callable(wait):
                wait(f"[lock] {what} {target.name} is being written by {who}; waiting for it to finish "
                     f"(Ctrl-C to stop)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": _command(),
                                  "cwd": _cwd()}).encode(), 0)
        yield
    finally:
        if created and [p.name for p in target.iterdir()] == [".lock"]:
            # a start refused before writing anything leaves no directory behind
            lock.unlink(missing_ok=True)
            target.rmdir()
        os.close(fd)  # closing releases the flock
