"""mkdocs hook: the notebook pages render the executed copies in docs/notebooks/.

`docs/execute_notebooks.py` writes those copies from a run at each notebook's default
settings, with the digest of the notebook's source cells. The build refuses a notebook with
no executed copy, and warns (which fails a strict build) when a notebook changed after its
copy was executed. Plotly figures in the copies are HTML that needs plotly.js: the theme's
`main.html` loads it on notebook pages, and this hook copies it from the plotly package.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXECUTED = ROOT / "docs" / "notebooks"
PLOTLY_JS = "assets/javascripts/plotly.min.js"
log = logging.getLogger("mkdocs.plugins.altk")


def source_digest(path: Path) -> str:
    """sha256 of a notebook's cells (type and source), outputs and metadata aside."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    text = json.dumps([[c["cell_type"], "".join(c["source"])] for c in cells])
    return hashlib.sha256(text.encode()).hexdigest()


def stale_copies() -> tuple[list[str], list[str]]:
    """(notebooks with no executed copy, notebooks changed since their copy was executed)."""
    missing, stale = [], []
    for source in NOTEBOOKS:
        copy = EXECUTED / source.name
        if not copy.exists():
            missing.append(source.stem)
        elif json.loads(copy.read_text(encoding="utf-8"))["metadata"].get("altk", {}).get("source_sha256") != source_digest(source):
            stale.append(source.stem)
    return missing, stale


def on_pre_build(config, **kwargs) -> None:
    missing, stale = stale_copies()
    if missing:
        raise PluginError(f"no executed copy of {', '.join(missing)} in docs/notebooks/: run "
                          f"`.venv/bin/python docs/execute_notebooks.py {' '.join(missing)}` (after `./run demo`)")
    if stale:
        log.warning(f"notebooks changed since docs/notebooks/ was executed: {', '.join(stale)}; run "
                    f"`.venv/bin/python docs/execute_notebooks.py {' '.join(stale)}`")


def on_post_build(config, **kwargs) -> None:
    import plotly

    target = Path(config["site_dir"]) / PLOTLY_JS
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", target)
