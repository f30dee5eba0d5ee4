"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""


class RobopolError(Exception):
    """Base for every error caused by user input (configs, files, commands), not by a bug."""


class ConfigError(RobopolError):
    """A config key, value or combination that is not allowed."""


class CheckpointError(RobopolError):
    """A checkpoint that is missing, corrupt or does not match what it is used for."""


class DataError(RobopolError):
    """A demonstration file with missing keys, wrong shapes or made for another task."""
