"""The environment of a helper Python process that must import the same nas as this one."""

from __future__ import annotations

import os
from pathlib import Path


def helper_env() -> dict[str, str]:
    """This process's environment with nas's own folder first on ``PYTHONPATH`` (a checkout run without
    installing, or a worktree, is what the helper imports too)."""
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env
