"""The one error type the command line reports as a message rather than a traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """A mistake in what was asked (a plan, a case name, a module, a backend). The
    message is one paragraph that says what is wrong and what would be valid; the
    command line prints it and exits with status 2."""


def first_line(exc: BaseException, limit: int = 400) -> str:
    """The exception's type and first meaningful line, short enough for a table."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
