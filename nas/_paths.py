"""Whether a folder can be written, found out before a command writes anything there.

A command that fails half-way on a read-only or full disk leaves partial files behind (and may have
done minutes of work first); this check creates nothing: it writes a few bytes to a temporary file
in the folder, or in its nearest existing ancestor when the folder does not exist yet.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from nas.errors import NasError

_PROBE = b"nas" * 1024  # a few KiB: a nearly full disk refuses it, as it would the real files


def write_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written, or ``None`` when it can."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        # os.access says yes to root even where writing fails (read-only mounts): try for real.
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".nas-write-test-") as probe:
            probe.write(_PROBE)
            probe.flush()
    except OSError as error:
        return f"cannot write in {existing} ({error.strerror or error})"
    return None


def check_writable(folder: Path, flag: str) -> None:
    """``NasError`` naming ``flag`` and the folder unless ``folder`` can be created and written."""
    problem = write_problem(folder)
    if problem is not None:
        raise NasError(f"{flag} {folder}: {problem}; choose another folder")
