"""Exceptions that carry a message a user can act on."""


class ImagebenchError(Exception):
    """Base class for every error that imagebench raises on purpose."""


class ConfigError(ImagebenchError):
    """An invalid value in the workflow configuration."""


class CheckpointError(ImagebenchError):
    """A checkpoint that cannot be fetched, verified or loaded safely."""


class DatasetError(ImagebenchError):
    """A dataset whose files or labels do not match its declared layout."""


class OutputError(ImagebenchError):
    """An output file that cannot be written: a full disk, a file size limit, a read-only folder."""
