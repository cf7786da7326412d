"""The house rules, checked: layers without circles, no print in the library, no private
imports across modules, a light and documented public API."""
import ast
import doctest
import importlib
import inspect
import re
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
            params = [p for p in inspect.signature(obj).parameters if p not in ("self",)]
            if params:
                assert "Args:" in doc, f"{name}: no Args section"


# the API's examples, run in order (later ones read what earlier ones wrote: the run records of
# toolkit.al.loop, toolkit.api and toolkit.features.select_finetune, the hand-written task "t0" of
# toolkit.record.RunRecord, which toolkit.runs and the analyses read)
DOCTESTS = ["toolkit._util.paths", "toolkit.config", "toolkit.models", "toolkit.data", "toolkit.data.toy_tasks",
            "toolkit.al.acquisition", "toolkit.al.diversity", "toolkit.features.cache", "toolkit.features.synthetic",
            "toolkit.features.interventions", "toolkit.features.probe",
            "toolkit.al.loop", "toolkit.api", "toolkit.features.select_finetune", "toolkit.record", "toolkit.runs",
            "toolkit.analysis.curves", "toolkit.analysis.composition", "toolkit.analysis.strategies",
            "toolkit.analysis.cost", "toolkit.analysis.suite", "toolkit.analysis.dose", "toolkit.analysis.separability",
            "toolkit.analysis.maps", "toolkit.analysis.neighbours", "toolkit.analysis.gain_law", "toolkit.report.html",
            "toolkit.report.explore", "toolkit.experiments.diagnose", "toolkit.experiments.interventions",
            "toolkit.data.spamassassin", "toolkit.errors", "toolkit"]


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



# the entry of docs/api.md exempt from the parameter-table-and-example rule: `toolkit.errors` is a
# module (the page shows its exception classes, which take a message)
API_PAGE_EXCEPTIONS = {"toolkit.errors"}


def _api_page_entries() -> list[str]:
    """The `::: toolkit.x.y` entries of docs/api.md, in page order."""
    return re.findall(r"^::: (toolkit[\w.]*)\s*$", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.M)


def _api_object(path: str):
    try:
        return importlib.import_module(path)
    except ImportError:
        module, name = path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)


def test_every_api_page_entry_has_a_parameter_table_and_an_example():
    """Each `::: ` entry of docs/api.md, read as the page renders it (griffe's Google parser):
    an `Args:` section when it takes parameters (for a class, its constructor's, in the class
    docstring), naming only parameters it has, and an `Examples:` section with `>>>` lines."""
    from griffe import Docstring, DocstringSectionKind

    entries = _api_page_entries()
    assert len(entries) > 30 and API_PAGE_EXCEPTIONS <= set(entries), "the API page lost its entries"
    problems = []
    for path in entries:
        if path in API_PAGE_EXCEPTIONS:
            continue
        obj = _api_object(path)
        sections = Docstring(inspect.getdoc(obj) or "", lineno=1).parse("google", warn_missing_types=False)
        params = [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
        names = {{p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name for p in params}
        documented = [d.name for s in sections if s.kind is DocstringSectionKind.parameters for d in s.value]
        if params and not documented:
            problems.append(f"{path}: no Args section (it takes {', '.join(sorted(names))})")
        unknown = [d for d in documented if d not in names and d.lstrip("*") not in names]
        if unknown:
            problems.append(f"{path}: Args names {unknown}, which it does not take")
        examples = [text for s in sections if s.kind is DocstringSectionKind.examples for _, text in s.value]
        if not any(">>>" in text for text in examples):
            problems.append(f"{path}: no Examples section with >>> lines")
    assert not problems, "\n".join(problems)


def test_every_api_page_example_is_run():
    """Each entry's example runs in test_docstring_examples_run: its module is in DOCTESTS
    (or a DOCTESTS module lists it in `__test__`, as toolkit.models does its re-exports)."""
    run = {name: importlib.import_module(name) for name in DOCTESTS}
    not_run = []
    for path in _api_page_entries():
        if path in API_PAGE_EXCEPTIONS:
            continue
        obj = _api_object(path)
        home = obj.__name__ if inspect.ismodule(obj) else obj.__module__
        if home not in run and not any(obj in getattr(m, "__test__", {}).values() for m in run.values()):
            not_run.append(f"{path} (module {home})")
    assert not not_run, f"API examples that no test runs (add their modules to DOCTESTS): {not_run}"
