"""One cache root for everything the toolkit writes by default.

`ALTK_CACHE` names it; without it, the checkout's `cache/` folder (beside `toolkit/`)
when the toolkit runs from a clone, else `~/.cache/altk`. Every default path
(the toy backbone, datasets, feature caches, demo outputs) is under it, so results do not
depend on the working directory: a notebook in `notebooks/` and a shell in the repository
root share one cache.
"""
from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    """The cache root: `$ALTK_CACHE`, else the checkout's `cache/`, else `~/.cache/altk`."""
    env = os.environ.get("ALTK_CACHE")
    if env:
        return Path(env).expanduser()
    if (_CHECKOUT / "pyproject.toml").exists() and (_CHECKOUT / "toolkit").is_dir():
        return _CHECKOUT / "cache"
    return Path.home() / ".cache" / "altk"


def cache_path(*parts: str) -> Path:
    """A path under the cache root (`ALTK_CACHE`, default: the checkout's `cache/`).

    Args:
        *parts: path components under the root, e.g. "features" or "runs", "my-run".

    Examples:
        >>> import os, toolkit
        >>> os.environ["ALTK_CACHE"] = "altk-doc/cache"
        >>> str(toolkit.cache_path("features"))
        'altk-doc/cache/features'
    """
    return cache_root().joinpath(*parts)


def default_dir(value, *parts: str):
    """`value`, or the cache root's `parts` folder when `value` is "auto" (None stays None:
    for the loaders that means "keep nothing on disk")."""
    return cache_path(*parts) if isinstance(value, str) and value == "auto" else value


def shown(path: str | Path) -> str:
    """A path as printed to the user: relative to the working folder when it lies inside it
    (`cache/demo/report.html` from the repository root), or, from a folder of the checkout, to
    another folder of it (`../cache/notebooks/quickstart` from `notebooks/`), so printed output
    and the docs that quote it name no one machine's folders; else as given."""
    path = Path(path)
    try:
        resolved, cwd = path.resolve(), Path.cwd().resolve()
    except OSError:  # no working folder
        return str(path)
    if resolved.is_relative_to(cwd):
        return str(resolved.relative_to(cwd))
    if resolved.is_relative_to(_CHECKOUT) and cwd.is_relative_to(_CHECKOUT):
        return os.path.relpath(resolved, cwd)
    return str(path)
