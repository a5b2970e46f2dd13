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
    "Variant",
    "cases",
    "get_case",
    "make_case",
    "register",
    "unregister",
]
