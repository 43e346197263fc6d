"""Errors that reach the user as one line, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint) that the user can fix."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    """A sample that cannot be read; names the file and the problem."""


class CheckpointError(UserError):
    pass
