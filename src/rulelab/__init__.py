"""rulelab: accuracy and cost of JAX custom derivative rules, measured against mpmath."""

from rulelab.model.case import (
    EXTENDED_REALS,
    NONNEGATIVE,
    POSITIVE,
    REALS,
    TRANSFORMS,
    Case,
    CaseError,
    Convention,
    Interval,
    Variant,
    cases,
    get_case,
    make_case,
    register,
    unregister,
)

__version__ = "0.1.0"

_API = {"sweep": "rulelab.api", "load_run": "rulelab.api", "Run": "rulelab.api"}
"""Names served from modules that import pandas and the report, loaded on first use
(``import rulelab`` stays light for the worker processes)."""


def __getattr__(name: str) -> object:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rulelab' has no attribute {name!r}")


__all__ = [
    "EXTENDED_REALS",
    "NONNEGATIVE",
    "POSITIVE",
    "REALS",
    "TRANSFORMS",
    "Case",
    "CaseError",
    "Convention",
    "Interval",
    "Run",
    "Variant",
    "cases",
    "get_case",
    "load_run",
    "make_case",
    "register",
    "sweep",
    "unregister",
]
