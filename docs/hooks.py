"""mkdocs hook: render the notebooks with outputs from an executed run, not committed ones.

The test suite executes every notebook (tests/test_notebooks.py) and keeps the executed
copies under cache/executed-notebooks/. Before each build this copies them into
docs/notebooks/ (git-ignored); a notebook the tests have not executed yet is copied as
committed, without outputs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def on_pre_build(config, **kwargs) -> None:
    executed = Path(os.environ.get("ALTK_EXECUTED_NOTEBOOKS", ROOT / "cache" / "executed-notebooks"))
    target = ROOT / "docs" / "notebooks"
    target.mkdir(exist_ok=True)
    for source in sorted((ROOT / "notebooks").glob("*.ipynb")):
        done = executed / source.name
        shutil.copyfile(done if done.exists() else source, target / source.name)
