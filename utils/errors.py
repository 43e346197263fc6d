"""Errors that reach the user as one line, never as a traceback."""
import reprlib
from typing import Any


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint) that the user can fix."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    """A sample that cannot be read; names the file and the problem."""


class CheckpointError(UserError):
    pass


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, cut to `limit` characters (its type when it has no text)."""
    return " ".join(str(err).split())[:limit] or type(err).__name__


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 80, 80


def short_repr(value: Any, limit: int = 300) -> str:
    """`repr(value)` for an error message, cut to `limit` characters without building the whole repr:
    YAML aliases and pickle memo references can make a value of billions of items from a few bytes."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
