"""Errors that end a command with one clear line (exit code 2), never a traceback."""

from __future__ import annotations


class StrataError(Exception):
    """Base of errors reported to the user as one line; ``str(err)`` names what to fix."""

    exit_code = 2


class InputFileError(StrataError):
    """A whole input file is unusable: missing, unreadable, empty, wrong delimiter or encoding,
    or missing a required column. The message names the file (and the column)."""


class InsufficientDataError(StrataError):
    """Too little data to do what was asked; the message states the numbers and what is needed."""


class ModelNotFoundError(StrataError):
    """No registered model (or alias) to load."""


class EngineMemoryError(StrataError):
    """The in-process engine ran out of the memory it may use; the message names the limit and the setting."""
