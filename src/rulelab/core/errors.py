"""The one error type the command line reports as a message rather than a traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """A mistake in what was asked (a plan, a case name, a module, a backend). The
    message is one paragraph that says what is wrong and what would be valid; the
    command line prints it and exits with status 2."""


TRACEBACK = "Traceback (most recent call last):"


def first_line(exc: BaseException, limit: int = 400) -> str:
    """The exception's type and first meaningful line, short enough for a table. Where
    the message carries another error's traceback (JAX re-raises a failing host
    callback's so), that error's own last line is what is kept."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if lines and TRACEBACK in lines[0]:
        inner = [ln for ln in lines[1:] if not ln.startswith(("File ", "^", "~")) and ln != TRACEBACK]
        text = f"{type(exc).__name__}: {lines[0].replace(TRACEBACK, '').strip()} {inner[-1] if inner else ''}".rstrip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
