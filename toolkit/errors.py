"""The toolkit's exceptions: catch `AltkError` for any of them.

Each subclass keeps the built-in base that the same failure raised before, so code
written as `except ValueError` or `except FileNotFoundError` still catches it.

Examples:
    >>> import toolkit
    >>> try:
    ...     toolkit.resolve_config("toy", ["al.budgett=5"])
    ... except toolkit.AltkError as err:
    ...     print(type(err).__name__)
    ConfigError
"""
from __future__ import annotations


class AltkError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ConfigError(AltkError, ValueError):
    """A config key, preset, override or argument is invalid, or the protocol cannot run."""


class DataError(AltkError, ValueError):
    """A dataset's files or parameters are invalid (the message names the file or column)."""


class ModelError(AltkError, ValueError):
    """An unknown model name, or weights that do not fit the architecture."""


class CacheError(AltkError, ValueError):
    """A feature cache that does not match its request, or is damaged."""


class RecordError(AltkError, ValueError):
    """A run record that is damaged, incomplete, or does not match its request."""


class MissingFileError(AltkError, FileNotFoundError):
    """A file or folder the toolkit needs is not there."""


class OutputExistsError(AltkError, FileExistsError):
    """An output path is taken, and overwriting it would lose data."""


class LockedError(AltkError, RuntimeError):
    """Another live process is writing the same run, cache or sweep."""


class RunsFailedError(AltkError, RuntimeError):
    """Some runs of a demo, suite or study failed; the message names each with its last error line."""


class HubError(AltkError, RuntimeError):
    """Weights, a config or a tokenizer that a model hub could not give (offline, or an id it does not hold)."""
