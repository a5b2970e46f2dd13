"""What a run records about where it came from: package versions, the project's git
commit, the host."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("rulelab", "jax", "jaxlib", "numpy", "mpmath", "gmpy2", "ml_dtypes", "pandas", "pyarrow")


def versions() -> dict[str, str | None]:
    """Versions of Python and of the packages results depend on (None if absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit(cwd: str | Path | None = None) -> dict[str, Any]:
    """The commit checked out in ``cwd`` (None outside a git repository or without git)
    and whether tracked files have uncommitted changes."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty}


def host() -> dict[str, Any]:
    """The machine: name, OS, architecture, cores."""
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}
