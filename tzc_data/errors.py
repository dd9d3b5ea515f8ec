"""Errors a user sees: each message is one line that names the thing and the cause.

The CLI prints ``tzc-data: error: <message>`` for any :class:`TzcError` and exits 2; anything else
is a bug and keeps its traceback.
"""


class TzcError(Exception):
    """Base of the errors that are the user's to fix (bad option, unreadable source…)."""


class ConfigError(TzcError):
    """An option or combination of options that cannot work."""


class SourceError(TzcError):
    """A source that cannot be listed, opened or read as a whole."""


class TokenizerError(TzcError):
    """A tokenizer that cannot be fetched, verified or used for the Gemma template."""


class OutputError(TzcError):
    """An output directory that would be overwritten or cannot be written."""


class GuardrailError(TzcError):
    """The build finished but its result is not fit to train on (e.g. too few rows kept)."""
