"""One writer per run directory or cache: an advisory `flock` on a lock file.

The kernel releases a flock when its process dies, however it dies, so a lock left by a
killed process never blocks the next writer; no stale-lock timeouts are needed. The file
holds the holder's pid, host and start time, for the refusal message. (flock does not
reach across hosts on every network filesystem; on NFS, use one output folder per job.)
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from toolkit.errors import LockedError  # noqa: F401  (raised here; defined with the others)


@contextlib.contextmanager
def exclusive(target: str | Path, what: str, *, directory: bool = False):
    """Hold a lock on `target` for the block's duration: `<target>/.lock` for a directory
    (created if needed), else the sibling `<target>.lock`. The lock file stays (removing
    it would let two writers lock two different files)."""
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
            except (ValueError, KeyError):
                who = "another process"
            raise LockedError(f"{what} {target} is being written by {who}. Wait for it to finish (or stop it), "
                              f"or choose another output.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        yield
    finally:
        if created and [p.name for p in target.iterdir()] == [".lock"]:
            # a start refused before writing anything leaves no directory behind
            lock.unlink(missing_ok=True)
            target.rmdir()
        os.close(fd)  # closing releases the flock
