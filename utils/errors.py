"""Errors that reach the user as one line, never as a traceback."""


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
