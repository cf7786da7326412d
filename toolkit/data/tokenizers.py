"""Tokenizers for the text datasets, loaded from the Hugging Face hub or a local folder."""
from __future__ import annotations

from toolkit.errors import DataError


def hub_error(what: str, err: Exception) -> RuntimeError:
    """The error for a model or tokenizer the hub could not give, with the offline recipe."""
    return RuntimeError(
        f"could not load {what}: {err}. Without access to the Hugging Face hub, save the model and its "
        f"tokenizer elsewhere with `save_pretrained(FOLDER)`, copy FOLDER here and pass model.weights=FOLDER "
        f"(and data.params.tokenizer=FOLDER)."
    )


def load_tokenizer(name_or_folder: str):
    """A transformers fast tokenizer from the hub or a local folder, with a clear error."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_folder)
    except OSError as err:
        raise hub_error(f"tokenizer {name_or_folder!r}", err) from err
    if len(tok) < 100:  # a tokenizer loaded from incomplete files comes back nearly empty
        raise DataError(f"tokenizer {name_or_folder!r} has only {len(tok)} tokens; its vocabulary files were not read")
    return tok
