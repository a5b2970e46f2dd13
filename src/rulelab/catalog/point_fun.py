"""A pytree in, a pytree out: Point(x, y) -> {'a': x^2, 'b': (sin x, cos y)}, with
custom rules for the whole tree, measured through the scalar out['a'] + out['b'][0]."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rulelab.model.case import REALS, Variant, make_case, register


class Point(NamedTuple):
    """A 2-D point; a pytree because namedtuples are."""

    x: Any
    y: Any


def f_naive(pt: Point) -> dict[str, Any]:
    """The pytree-valued function, differentiated by autodiff."""
    return {"a": pt.x**2, "b": (jnp.sin(pt.x), jnp.cos(pt.y))}


@jax.custom_jvp
def f_jvp(pt: Point) -> dict[str, Any]:
    """The pytree-valued function with a defjvp rule over the whole tree."""
    return f_naive(pt)


@f_jvp.defjvp
def _f_jvp_rule(primals: tuple[Point], tangents: tuple[Point]) -> tuple[Any, Any]:
    (pt,), (dpt,) = primals, tangents
    tangent = {
        "a": 2.0 * pt.x * dpt.x,
        "b": (jnp.cos(pt.x) * dpt.x, -jnp.sin(pt.y) * dpt.y),
    }
    return f_jvp(pt), tangent


@jax.custom_vjp
def f_vjp(pt: Point) -> dict[str, Any]:
    """The pytree-valued function with a custom_vjp rule over the whole tree."""
    return f_naive(pt)


def _f_fwd(pt: Point) -> tuple[dict[str, Any], Point]:
    return f_vjp(pt), pt


def _f_bwd(pt: Point, g: dict[str, Any]) -> tuple[Point]:
    ga, (gsin, gcos) = g["a"], g["b"]
    return (Point(2.0 * pt.x * ga + jnp.cos(pt.x) * gsin, -jnp.sin(pt.y) * gcos),)


f_vjp.defvjp(_f_fwd, _f_bwd)


def scalarize(out: dict[str, Any]) -> Any:
    """The documentation's fun(pt): out['a'] + out['b'][0] (cos y is dropped)."""
    return out["a"] + out["b"][0]


def _via(f: Any) -> Any:
    """The case's scalar variant: (x, y) -> scalarize(f(Point(x, y)))."""

    def fn(x: Any, y: Any) -> Any:
        return scalarize(f(Point(x, y)))

    return fn


CASE = register(
    make_case(
        "point_fun",
        "x^2 + sin(x), as out['a'] + out['b'][0] of "
        "Point(x, y) -> {'a': x^2, 'b': (sin x, cos y)}",
        ("x", "y"),
        REALS,
        lambda mp, x, y: x**2 + mp.sin(x),
        [
            Variant("naive", _via(f_naive), "autodiff through the pytrees"),
            Variant("custom_jvp", _via(f_jvp), "defjvp over the whole pytree"),
            Variant("custom_vjp", _via(f_vjp), "custom_vjp over the whole pytree"),
        ],
        source="JAX docs: Custom derivative rules for JAX-transformable Python functions — "
        "working with list / tuple / dict containers",
        derivatives={
            ("x", 1): lambda mp, x, y: 2 * x + mp.cos(x),
            ("x", 2): lambda mp, x, y: 2 - mp.sin(x),
            ("y", 1): lambda mp, x, y: mp.mpf(0),
            ("y", 2): lambda mp, x, y: mp.mpf(0),
        },
        special_points=(
            (0.0, 0.0),
            (-0.8767262153950625, 0.0),  # the other zero of x^2 + sin x
            (-0.45018361129487355, 0.0),  # the zero of 2x + cos x
        ),
        notes="Nothing goes wrong naively; the case checks that rules over pytrees route "
        "every leaf's tangent and cotangent, and that the unused output cos y contributes "
        "an exact zero derivative in y. Near the zeros of the value and of its derivative "
        "every variant loses relative accuracy to cancellation.",
    )
)
