"""Deterministic kill points for fault tests: `ALTK_KILL_AT=<point>` ends the process at
that point with `os._exit(137)` (what SIGKILL leaves: no cleanup, no finally blocks).
Points are named `<where>:<stage>:<round or chunk>`, e.g. `loop:trained:1`; unset (the
normal case) it costs one dictionary lookup."""
from __future__ import annotations

import os


def kill_point(name: str) -> None:
    if os.environ.get("ALTK_KILL_AT") == name:
        os._exit(137)
