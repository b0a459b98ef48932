"""Error kinds shared by the command lines."""


class UsageError(ValueError):
    """The command line itself is wrong (options that conflict or are missing): exit code 2, where
    a failed run (a file, a model, the data) exits 1."""
