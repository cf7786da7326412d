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
# Pages this test cannot fix from the docs, each with the reason; remove an entry once fixed.
KNOWN = {
    # The executed notebooks (tests/test_notebooks.py, run under pytest's tmp cache) print
    # absolute cache paths in their outputs ("/tmp/pytest-of-root/...").
    "notebooks/": "outputs of the notebooks executed by tests/test_notebooks.py",
}


def _text_lines(text: str):
    """The page's visible text, line by line (tags removed, entities decoded)."""
    body = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
    for number, line in enumerate(body.split("\n"), 1):
        yield number, html.unescape(re.sub(r"<[^>]+>", "", line))


def test_no_machine_path_in_the_site_or_the_readme(site):
    bad = []
    for rel, text in _pages(site):
        if any(rel.startswith(prefix) for prefix in KNOWN):
            continue
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
