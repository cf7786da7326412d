"""Checks on the built docs site: what a reader sees, not only what the Markdown says.

The site is built once per session, strictly, into pytest's tmp_path (never into the
repository). Building runs docs/hooks.py, which refreshes the git-ignored docs/notebooks/
as every build does.
"""
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _pages(site: Path):
    """(path relative to the site, html) of every rendered page; the search index is skipped."""
    for page in sorted(site.rglob("*.html")):
        rel = page.relative_to(site).as_posix()
        if not rel.startswith(("search/", "assets/")):
            yield rel, page.read_text(encoding="utf-8")


# A Markdown list needs a blank line before it in Python-Markdown (unlike GitHub's renderer):
# without one, its items stay in the paragraph above and the page shows "text - item - item".
# The tell in the HTML: a line of a <p> that starts with a list marker followed by a word or
# an inline element (bold, italic, code, link). A prose dash inside a line ("5.8-9x",
# "H[p] - mean H[p]") or a minus before a number at a line start ("- 2 (a.b)") is not one.
RUN_ON_ITEM = re.compile(r"^[ \t]*[-*][ \t]+(?:<(?:strong|em|code|a)\b|[A-Za-z_])")
PARAGRAPH = re.compile(r"<p\b[^>]*>(.*?)</p>", re.S)
# A line of a paragraph starting with ">" (">= 0.91") becomes a quote: "<blockquote><p>= 0.91".
STRAY_QUOTE = re.compile(r"<blockquote>\s*<p>\s*=")
# A fenced block indented inside a list item is not a fence to Python-Markdown: "<p>```".
STRAY_FENCE = re.compile(r"<p>[^<]*```")
# A list right under a table (no blank line) becomes one more row: "<td>- <strong>Item".
CELL = re.compile(r"<t[dh]\b[^>]*>(.*?)</t[dh]>", re.S)


def find_run_on_lists(text: str) -> list[str]:
    hits = []
    for para in PARAGRAPH.finditer(text):
        for line in para.group(1).split("\n")[1:]:  # the first line is the paragraph's own start
            if RUN_ON_ITEM.match(line):
                hits.append(html.unescape(re.sub(r"<[^>]+>", "", line)).strip()[:90])
    for cell in CELL.finditer(text):
        if RUN_ON_ITEM.match(cell.group(1)):
            hits.append(html.unescape(re.sub(r"<[^>]+>", "", cell.group(1))).strip()[:90])
    hits += [m.group(0) for m in STRAY_QUOTE.finditer(text)]
    hits += [m.group(0) for m in STRAY_FENCE.finditer(text)]
    return hits


def test_the_run_on_list_rule_catches_lists_and_not_prose():
    assert find_run_on_lists("<p>Definitions:\n- <strong>worst_group</strong>: the lowest\n- <strong>b</strong></p>")
    assert find_run_on_lists("<p>Measured here:\n- probe_speed (5,000 x 2,048)</p>")
    assert find_run_on_lists("<p>this\n- <em>Probe mode</em>: a bootstrap</p>")
    assert find_run_on_lists("<p>the background at</p>\n<blockquote>\n<p>= 0.91 in every group.</p>\n</blockquote>")
    assert not find_run_on_lists("<p>H[mean_s p_s] - mean_s H[p_s], from S\n|a_j|^2 - 2 (a.b)\n- 2 (a.b)</p>")
    assert not find_run_on_lists("<p>the groups 5.8-9x over - Their share</p>")  # inside a line: prose
    assert find_run_on_lists("<tr><td>- <strong>Inputs that changed</strong> are refused</td></tr>")
    assert not find_run_on_lists("<tr><td>-0.020</td><td>- 2</td><td>+ dihedral views, Adam 2e-3</td></tr>")
    assert find_run_on_lists("<p>```\n  pool 5000 x 2048\n  ```</p>")
    assert not find_run_on_lists("<ul>\n<li>An item</li>\n</ul>\n<p>Text.</p>")


def test_no_list_quote_or_fence_renders_as_run_on_text(site):
    bad = [f"{rel}: {hit}" for rel, text in _pages(site) for hit in find_run_on_lists(text)]
    assert not bad, "a list without a blank line before it, a line starting with '>', or a fence inside a list item:\n" + "\n".join(bad)


# Paths of one machine: absolute folders, and the folder beside the repository that only the
# authors' checkout has.
MACHINE_PATH = re.compile(r"(?<![\w.~-])(/tmp/|/home/|/work/|/root/)|\.\./shared\b")
def _text_lines(text: str):
    """The page's visible text, line by line (tags removed, entities decoded)."""
    body = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
    for number, line in enumerate(body.split("\n"), 1):
        yield number, html.unescape(re.sub(r"<[^>]+>", "", line))


def test_no_machine_path_in_the_site_or_the_readme(site):
    bad = []
    for rel, text in _pages(site):
        bad += [f"site/{rel}:{n}: {line.strip()[:120]}" for n, line in _text_lines(text) if MACHINE_PATH.search(line)]
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    bad += [f"README.md:{n}: {line.strip()[:120]}" for n, line in enumerate(readme, 1) if MACHINE_PATH.search(line)]
    assert not bad, "a path that exists on one machine only:\n" + "\n".join(bad)


def test_the_machine_path_rule():
    for text in ("wrote /tmp/run", "cd /home/me", "/work/main/cache", "/root/x", "(`../shared/seeds/`)"):
        assert MACHINE_PATH.search(text), text
    for text in ("cache/demo/tmp/x", "wrote cache/demo/runs", "../decisions.md", "a/b/work/c"):
        assert not MACHINE_PATH.search(text), text


def test_the_api_page_claims_only_what_is_true():
    """The API page: every entry above "Strategies, and the analyses the guides use" is
    importable from `toolkit`, and every name `toolkit` exports has an entry there."""
    import toolkit

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    exported_part = text.split("## Strategies, and the analyses the guides use")[0]
    entries = re.findall(r"^::: (toolkit[\w.]*)\.(\w+)$", exported_part, re.M)
    assert entries
    not_importable = [f"{m}.{n}" for m, n in entries if n != "errors" and not hasattr(toolkit, n)]
    assert not not_importable, f"documented as importable from toolkit, but not: {not_importable}"
    documented = {n for _, n in entries} | {"__version__"}
    import toolkit.errors as errors

    documented |= {n for n in dir(errors) if n.endswith("Error")}  # `::: toolkit.errors` documents them all
    undocumented = sorted(set(toolkit.__all__) - documented)
    assert not undocumented, f"exported by toolkit but not on the API page: {undocumented}"


# ---- notebook pages: executed copies from a real run, with their figures ----------------------
sys.path.insert(0, str(ROOT / "docs"))
from hooks import EXECUTED, NOTEBOOKS, source_digest, stale_copies  # noqa: E402

FIGURE_CALL = re.compile(r"(_figure\(|\.figure\()")  # the notebooks draw with report.figures or Runs.figure


def test_every_notebook_has_an_executed_copy_of_its_current_source():
    """`docs/execute_notebooks.py` wrote each copy from the notebook as it is now: a notebook
    edited without being executed again fails here (and fails the strict build)."""
    missing, stale = stale_copies()
    assert not missing and not stale, (f"missing: {missing}, changed since executed: {stale}; "
                                       "run `.venv/bin/python docs/execute_notebooks.py NAME`")


def test_the_source_digest_sees_code_and_not_outputs(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "a.ipynb")
    before = source_digest(tmp_path / "a.ipynb")
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="1")]
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert source_digest(tmp_path / "a.ipynb") == before
    nb.cells[0].source = "x = 2"
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert source_digest(tmp_path / "a.ipynb") != before


def _figure_outputs(copy: Path) -> int:
    import nbformat

    nb = nbformat.read(copy, as_version=4)
    return sum("plotly-graph-div" in out.get("data", {}).get("text/html", "")
               for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_page_shows_the_figures_its_notebook_draws(site, source):
    import nbformat

    code = "\n".join(c.source for c in nbformat.read(source, as_version=4).cells if c.cell_type == "code")
    draws = sum(bool(FIGURE_CALL.search(line)) and not line.lstrip().startswith(("#", "from ", "import "))
                for line in code.splitlines())
    page = (site / "notebooks" / source.stem / "index.html").read_text(encoding="utf-8")
    shown = page.count('class="plotly-graph-div"')
    assert shown == _figure_outputs(EXECUTED / source.name)
    if draws:
        assert shown >= 1, f"{source.stem} draws {draws} figure(s) but its page shows none"
        assert "assets/javascripts/plotly.min.js" in page and (site / "assets/javascripts/plotly.min.js").exists()
    assert "jp-OutputArea-output" in page  # outputs from the executed run, not the committed notebook
    assert "acc=0.500 worst=0.000" not in page and "[nan, nan]" not in page  # not the tests' tiny settings


def test_the_api_page_renders_the_entry_points(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "run_active_learning" in api and "resolve_config" in api


def test_executed_copies_store_plotly_figures_as_html_and_refuse_machine_paths():
    import nbformat
    import plotly.graph_objects as go
    from execute_notebooks import PLOTLY, drop_progress_bars, machine_paths_in, plotly_as_html

    from toolkit._util.paths import cache_root

    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [nbformat.v4.new_output("display_data", data={PLOTLY: fig.to_plotly_json(), "text/plain": "Figure"})]
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert plotly_as_html(nb) == 1
    html_out = cell.outputs[0]["data"]["text/html"]
    assert PLOTLY not in cell.outputs[0]["data"] and 'class="plotly-graph-div"' in html_out and "Plotly.newPlot" in html_out
    assert not machine_paths_in(nb)
    cell.outputs.append(nbformat.v4.new_output("stream", text=f"wrote {cache_root().resolve()}/demo/run"))
    bars = [nbformat.v4.new_output("stream", name="stderr", text="extract toyworld/train:  40%|####  | 800/2000"),
            nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a"},
                                                         "text/plain": "score pool:   0%|          | 0/1960"}),
            nbformat.v4.new_output("stream", name="stderr", text="a warning the reader should see\n")]
    cell.outputs += bars
    assert drop_progress_bars(nb) == 2 and cell.outputs[-1] is bars[-1]
    hits = machine_paths_in(nb)
    assert hits and all(hit.startswith("cell 0: ") for hit in hits)


@pytest.mark.skipif(not __import__("shutil").which("chromium"), reason="needs Chromium (apt-get install chromium)")
def test_a_notebook_page_draws_its_figures_in_a_browser(site):
    """plotly.js loads in the page's head and the figures' inline scripts draw them: the DOM after
    the scripts ran holds plotly's SVG."""
    page = site / "notebooks" / "06_task_suite" / "index.html"
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="main-svg"') >= 1
