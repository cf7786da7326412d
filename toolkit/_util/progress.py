"""Progress bars for long steps: a widget in Jupyter, a bar in a terminal, nothing in logs.

Every long step (toy pretraining, world rendering, extraction, pool scoring, the rounds of
a run, the runs of a sweep or demo, building a report) wraps its loop in `progress`. Bars
come from `tqdm.auto`, so a notebook shows a widget, and they show only where someone is
watching: when stderr is a terminal or the code runs in a Jupyter kernel. `--quiet` (or
ALTK_QUIET=1) turns them off everywhere; ALTK_PROGRESS=1 turns them on (for tests). Log
lines (`log=`) are unaffected.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (not a plain IPython terminal)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # noqa: BLE001 - IPython half-imported
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def bars_enabled() -> bool:
    if os.environ.get("ALTK_QUIET") == "1":
        return False
    if os.environ.get("ALTK_PROGRESS") == "1":
        return True
    return in_jupyter() or sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = True, position: int | None = None):
    """`tqdm.auto.tqdm` over `iterable` (or a bar to `.update()` by hand), shown only where
    `bars_enabled()`; a disabled bar costs nothing and prints nothing."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, position=position,
                disable=not bars_enabled(), dynamic_ncols=True)
