import os
from pathlib import Path

import nbformat
import pytest
from conftest import install_backbone
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Executed copies for the docs site (mkdocs-jupyter renders these, not the committed,
# output-free notebooks); see docs/hooks.py.
EXECUTED = Path(os.environ.get("ALTK_EXECUTED_NOTEBOOKS", ROOT / "cache" / "executed-notebooks"))


def test_notebooks_are_committed_without_outputs_and_never_change_directory():
    assert len(NOTEBOOKS) >= 5
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name
        assert not any("chdir" in c.source for c in nb.cells), path.name  # paths come from toolkit.cache_path


def _execute(path: Path, cwd: Path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_from_the_notebooks_folder(path, tiny_backbone, isolated_cache, monkeypatch):
    """As `./run lab` runs them: from notebooks/, writing only under ALTK_CACHE."""
    install_backbone(tiny_backbone, None)
    monkeypatch.setenv("ALTK_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    nb = _execute(path, ROOT / "notebooks")
    assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before  # nothing written beside them
    assert isolated_cache.exists()
    EXECUTED.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, EXECUTED / path.name)


def test_a_notebook_runs_from_the_repository_root_too(tiny_backbone, isolated_cache, monkeypatch):
    install_backbone(tiny_backbone, None)
    monkeypatch.setenv("ALTK_SMALL", "1")
    _execute(ROOT / "notebooks" / "01_quickstart.ipynb", ROOT)
    assert (isolated_cache / "notebooks" / "quickstart" / "least_confidence" / "rounds.jsonl").exists()


def test_docs_site_builds_strict_with_the_executed_notebooks(tmp_path):
    """`mkdocs build --strict`: a broken link, anchor or API reference fails CI. Runs after the
    notebook tests in this module, so the rendered notebooks carry their outputs."""
    import subprocess
    import sys

    out = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "run_active_learning" in api and "resolve_config" in api
    rendered = (tmp_path / "site" / "notebooks" / "01_quickstart" / "index.html").read_text()
    if (EXECUTED / "01_quickstart.ipynb").exists():
        assert "jp-OutputArea-output" in rendered  # outputs from the executed run, not the committed notebook
