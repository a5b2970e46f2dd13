"""The one error type the command line reports as a message rather than a traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """A mistake in what was asked (a plan, a case name, a module, a backend). The
    message is one paragraph that says what is wrong and what would be valid; the
    command line prints it and exits with status 2."""
