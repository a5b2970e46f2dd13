"""Where rulelab keeps what it can compute again (references, compiled programs, report
figures): $RULELAB_CACHE, else ~/.cache/rulelab."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder: $RULELAB_CACHE, else ~/.cache/rulelab."""
    env = os.environ.get("RULELAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rulelab"
