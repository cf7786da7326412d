"""The house rules, checked: layers without circles, no print in the library, no private
imports across modules, a light and documented public API."""
import ast
import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
LIBRARY = sorted((ROOT / "toolkit").rglob("*.py"))


def test_import_linter_contracts_hold():
    """The layers contract (no circles, no upward import) and the purity contracts of pyproject.toml."""
    out = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


def test_no_print_in_library_code():
    """Library output goes through logging or `log=` callables; only the CLI prints."""
    offenders = [f"{p.relative_to(ROOT)}:{c.lineno}" for p in LIBRARY if p.name != "cli.py"
                 for c in _calls(ast.parse(p.read_text()), "print")]
    assert not offenders, offenders


def test_no_module_imports_another_modules_private_name():
    offenders = []
    for p in LIBRARY:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("toolkit"):
                offenders += [f"{p.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


def test_no_cache_literals_outside_the_paths_module():
    """Every default path comes from toolkit._util.paths, so none depends on the working directory."""
    offenders = [f"{p.relative_to(ROOT)}:{n.lineno}" for p in LIBRARY
                 for n in ast.walk(ast.parse(p.read_text()))
                 if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("cache/")]
    assert not offenders, offenders


def test_import_toolkit_is_light_and_every_public_name_resolves():
    code = ("import sys, toolkit; assert 'torch' not in sys.modules, 'import toolkit pulled in torch'; "
            "missing = [n for n in toolkit.__all__ if getattr(toolkit, n, None) is None]; assert not missing, missing")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_keep_their_builtin_bases():
    import toolkit

    with pytest.raises(ValueError, match="unknown config key 'al.bugdet'") as info:
        toolkit.resolve_config("toy", ["al.bugdet=5"])
    assert isinstance(info.value, toolkit.ConfigError) and isinstance(info.value, toolkit.AltkError)
    with pytest.raises(toolkit.DataError):
        toolkit.create_dataset("no-such-dataset", "train")
    with pytest.raises(FileNotFoundError) as missing:
        toolkit.load_run(ROOT / "no-such-run")
    assert isinstance(missing.value, toolkit.MissingFileError)
    with pytest.raises(toolkit.ModelError, match="unknown model"):
        toolkit.create_model("no-such-model", num_classes=2)


def test_cache_root_follows_altk_cache(monkeypatch, tmp_path):
    from toolkit._util.paths import cache_root
    from toolkit.models.pretrain import toy_checkpoint

    monkeypatch.setenv("ALTK_CACHE", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere" and toy_checkpoint().parent.parent == tmp_path / "elsewhere"
    monkeypatch.delenv("ALTK_CACHE")
    assert cache_root() == ROOT / "cache"  # a checkout: the repository's cache/, whatever the working directory


def test_public_api_functions_have_google_docstrings_with_examples():
    import toolkit

    for name in toolkit._LAZY:
        obj = getattr(toolkit, name)
        doc = obj.__doc__ or ""
        assert doc.strip(), name
        if callable(obj) and not isinstance(obj, type):
            assert "Examples:" in doc and ">>>" in doc, f"{name}: no example"
            params = [p for p in __import__("inspect").signature(obj).parameters if p not in ("self",)]
            if params:
                assert "Args:" in doc, f"{name}: no Args section"


# the API's examples, run in order (later ones read what earlier ones wrote)
DOCTESTS = ["toolkit._util.paths", "toolkit.config", "toolkit.models", "toolkit.data", "toolkit.features.cache",
            "toolkit.features.probe", "toolkit.al.loop", "toolkit.api", "toolkit.record", "toolkit.runs",
            "toolkit.report.html", "toolkit.errors", "toolkit"]


def test_docstring_examples_run(monkeypatch, tiny_backbone, tmp_path):
    # the examples write under "altk-doc/" in the working folder, as they would for a reader
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    failed = {}
    for name in DOCTESTS:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
        if result.failed:
            failed[name] = result.failed
    assert not failed, failed
