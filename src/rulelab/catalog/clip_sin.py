"""sin(clip_gradient(-0.75, 0.75, x)): the value is sin x, but the derivative is
defined by a custom_vjp that clips the cotangent, so the case's derivative reference
is that convention rather than cos x."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rulelab.model.case import REALS, Convention, Variant, make_case, register

LO, HI = -0.75, 0.75


@jax.custom_vjp
def clip_gradient(lo: Any, hi: Any, x: Any) -> Any:
    """The identity on ``x``; its backward pass clips the cotangent to [lo, hi]."""
    return x


def _clip_fwd(lo: Any, hi: Any, x: Any) -> tuple[Any, Any]:
    return x, (lo, hi)


def _clip_bwd(res: tuple[Any, Any], g: Any) -> tuple[None, None, Any]:
    lo, hi = res
    return None, None, jnp.clip(g, lo, hi)


clip_gradient.defvjp(_clip_fwd, _clip_bwd)


def naive(x: Any) -> Any:
    """Plain sin: its derivative cos x disagrees with the convention where |cos x| > 0.75."""
    return jnp.sin(x)


def clipped(x: Any) -> Any:
    """sin of the gradient-clipping identity."""
    return jnp.sin(clip_gradient(LO, HI, x))


def _clip_mp(mp: Any, v: Any) -> Any:
    return max(min(v, mp.mpf(HI)), mp.mpf(LO))


def _d1(mp: Any, x: Any) -> Any:
    return _clip_mp(mp, mp.cos(x))


def _fast_d1(x: np.ndarray) -> np.ndarray:
    """clip(cos x) in float64 for the fast tier: continuous in cos x, so an error in cos
    moves it by no more. (The second derivative jumps at the clip's edges, where a
    float64 cos can land on the wrong side: it has no fast reference.)"""
    return np.clip(np.cos(x), LO, HI)


def _d2(mp: Any, x: Any) -> Any:
    # Reverse over reverse: the outer pass differentiates the inner gradient
    # clip(cos x) as ordinary code (clip_gradient's forward is the identity, and its
    # custom backward applies to first order only), so the second derivative is
    # -sin x where the clip is inactive and 0 where it holds the cotangent at +-0.75.
    if abs(mp.cos(x)) >= HI:
        return mp.mpf(0)
    return -mp.sin(x)


CASE = register(
    make_case(
        "clip_sin",
        "sin(x), with derivative clip(cos x, -0.75, 0.75)",
        ("x",),
        REALS,
        lambda mp, x: mp.sin(x),
        [
            Variant("naive", naive, "jnp.sin: the unclipped derivative cos x"),
            Variant(
                "custom_vjp",
                clipped,
                "sin(clip_gradient(-0.75, 0.75, x)), clip_gradient a custom_vjp identity "
                "whose backward clips the cotangent",
            ),
        ],
        source="JAX docs: Custom derivative rules for JAX-transformable Python functions — "
        "gradient clipping",
        conventions=(
            Convention(
                arg="x",
                order=1,
                where=lambda x: True,
                value=_d1,
                note="clip_gradient convention: the derivative is clip(cos x, -0.75, 0.75), "
                "not the derivative of sin",
            ),
            Convention(
                arg="x",
                order=2,
                where=lambda x: True,
                value=_d2,
                note="clip_gradient convention, second order: d/dx clip(cos x, -0.75, 0.75), "
                "that is -sin x where |cos x| < 0.75 and 0 where |cos x| > 0.75 (the "
                "custom backward is first-order only: grad of grad does not clip again)",
            ),
        ),
        special_points=(
            # |cos x| = 0.75: the clip switches on or off (arccos 0.75, pi - arccos 0.75).
            0.7227342478134157,
            -0.7227342478134157,
            2.4188584057763776,
            -2.4188584057763776,
        ),
        fast_reference={("x", 0): np.sin, ("x", 1): _fast_d1},
        notes="Not a numerical failure: the custom rule deliberately changes the derivative. "
        "The naive variant's derivative cos x disagrees with the convention wherever "
        "|cos x| > 0.75. Near the switching points low-precision cos rounds to the wrong "
        "side of 0.75, or onto it, where jnp.clip's derivative splits the tie in half.",
    )
)
