"""The project's own error types.

A stage turns an `AdvlandError` into a one-line message and exit code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class AdvlandError(Exception):
    """A problem with the user's input (params, data, caches, checkpoints) or output
    location, not a bug."""


class ParamsError(AdvlandError, ValueError):
    """A malformed parameter; the message names the key and what is allowed."""


class DataSourceError(AdvlandError):
    """No source could provide a dataset, or a file failed its checksum."""


class DataError(AdvlandError, ValueError):
    """A prepared dataset file that is missing, corrupt or of the wrong format."""


class CheckpointError(AdvlandError, ValueError):
    """A `.pt` file (checkpoint, eigenvectors) that is missing, corrupt or not safe to load."""


class OutputError(AdvlandError):
    """An output that cannot be written: its folder is read-only, full or forbidden."""


class TrainingDiverged(AdvlandError, FloatingPointError):
    """The training loss became non-finite."""
