"""The one exception family of nas: user-facing errors that the CLI prints as one line."""


class NasError(Exception):
    """A problem with the user's input or environment, stated in one line.

    The CLI prints ``str(error)`` and exits non-zero without a traceback. Messages name the file,
    field or value at fault.
    """
