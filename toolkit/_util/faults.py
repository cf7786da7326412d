"""Deterministic kill points for fault tests: `ALTK_KILL_AT=<point>` ends the process at
that point with `os._exit(137)` (what SIGKILL leaves: no cleanup, no finally blocks).
Points are named `<where>:<stage>:<round or chunk>`, e.g. `loop:trained:1`; unset (the
normal case) it costs one dictionary lookup. With `ALTK_KILL_ONCE=<file>` only the first
process to reach the point dies (it creates the file), so a test can kill one worker of many."""
from __future__ import annotations

import os


def kill_point(name: str) -> None:
    if os.environ.get("ALTK_KILL_AT") == name:
        once = os.environ.get("ALTK_KILL_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        os._exit(137)
