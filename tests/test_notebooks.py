from pathlib import Path

import nbformat
import pytest
from conftest import install_backbone
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


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
def test_notebook_runs_top_to_bottom_from_the_notebooks_folder(path, tiny_backbone, isolated_cache, monkeypatch,
                                                              tmp_path):
    """As `./run lab` runs them: from notebooks/, writing only under ALTK_CACHE."""
    from spam_corpus import make_corpus  # the real-text notebook's corpus: the generated mini-corpus

    install_backbone(tiny_backbone, None)
    monkeypatch.setenv("ALTK_SPAMASSASSIN", str(make_corpus(tmp_path / "spamassassin", "npm") / "data"))
    monkeypatch.setenv("ALTK_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    nb = _execute(path, ROOT / "notebooks")
    assert sorted(p.name for p in (ROOT / "notebooks").iterdir()) == before  # nothing written beside them
    assert isolated_cache.exists()
    assert nb.cells  # the docs' copies come from a run at default settings: docs/execute_notebooks.py


def test_a_notebook_runs_from_the_repository_root_too(tiny_backbone, isolated_cache, monkeypatch):
    install_backbone(tiny_backbone, None)
    monkeypatch.setenv("ALTK_SMALL", "1")
    _execute(ROOT / "notebooks" / "01_quickstart.ipynb", ROOT)
    assert (isolated_cache / "notebooks" / "quickstart" / "least_confidence" / "rounds.jsonl").exists()
