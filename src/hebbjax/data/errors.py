"""Errors raised by :mod:`hebbjax.data`.

Each also derives from the matching built-in exception, so callers may catch
``FileNotFoundError`` / ``ValueError`` without importing these classes. Messages
name the file involved and what was expected of it.
"""

from __future__ import annotations


class DataError(Exception):
    """Base class of every dataset error raised by hebbjax."""


class UnknownDatasetError(DataError, ValueError):
    """The dataset name is not one hebbjax supports."""


class MissingFileError(DataError, FileNotFoundError):
    """An original archive needed for offline preparation is absent."""

    def __str__(self) -> str:  # FileNotFoundError would format (errno, strerror)
        return str(self.args[0]) if self.args else ""


class ChecksumError(DataError, ValueError):
    """An archive's size or SHA-256 differs from the registered value."""


class ArchiveFormatError(DataError, ValueError):
    """An archive is truncated, corrupted or not in the expected format."""


class OfflineError(DataError, ConnectionError):
    """The dataset would have to be downloaded, but no network is reachable."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
