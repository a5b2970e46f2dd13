"""A user's two softplus rules: the textbook one, which cancels, and a stable one."""

import jax
import jax.numpy as jnp


@jax.custom_jvp
def softplus_textbook(x):
    return jnp.logaddexp(x, 0.0)


@softplus_textbook.defjvp
def _textbook_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return softplus_textbook(x), (1.0 - 1.0 / (1.0 + jnp.exp(x))) * t


@jax.custom_jvp
def softplus_stable(x):
    return jnp.logaddexp(x, 0.0)


@softplus_stable.defjvp
def _stable_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return softplus_stable(x), jax.nn.sigmoid(x) * t
