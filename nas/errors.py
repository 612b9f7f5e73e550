"""The one exception family of nas: user-facing errors that the CLI prints as one line."""


class NasError(Exception):
    """A problem with the user's input or environment, stated in one line.

    The CLI prints ``str(error)`` and exits non-zero without a traceback. Messages name the file,
    field or value at fault.
    """


# How nas reduces an error's text to one line, spelled once: a user sees one line, never a traceback.
LINE_LIMIT = 300


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when the message is empty."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def last_line(text: str, limit: int = LINE_LIMIT) -> str:
    """The last non-blank line of ``text`` (a message or a traceback), at most ``limit`` characters."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[-1] if lines else "error")[:limit]


def traceback_line(text: str, limit: int = LINE_LIMIT) -> str:
    """The line of a traceback that names the exception (its last line naming an Error or Exception)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:limit]
    return last_line(text, limit)
