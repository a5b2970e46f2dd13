"""Fingerprints of code: a digest of everything a function's result depends on.

The pitfall: hashing a function's own source misses what it calls. Editing a helper it
calls, a module constant it reads or a function captured in a closure changes the
numbers but not the top-level source, so a cache keyed that way serves numbers from
code that no longer exists. A fingerprint here follows the function's globals and
closures transitively (functions, modules' attributes, constants, a callable object's
attributes), stopping at installed libraries and the standard library, whose versions
are keyed separately; only a library function's closure is followed, since wrappers
(``custom_jvp.defjvps``) keep the user's code there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import sys
import sysconfig
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

_LIBRARY_ROOTS: tuple[str, ...] = tuple(
    str(Path(p).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib") if (p := sysconfig.get_paths().get(k))
)
_MAX_REPR = 100_000
"""Characters of a constant's repr that enter the digest (a huge table is still keyed
by its length and leading part)."""
_MAX_ITEMS = 10_000
"""Elements of a container constant that are followed one by one."""
_SCALARS = (int, float, complex, str, bytes, bool, type(None), range)
_WRAPPED = ("__wrapped__", "fun", "jvp", "fwd", "bwd")
"""Attributes through which wrappers (jax.custom_jvp and custom_vjp, jit) hold the code
they wrap, and its rules."""


def _module_is_library(name: str | None) -> bool:
    """Whether code in module ``name`` belongs to an installed library or the standard
    library (not followed), as opposed to rulelab or the user's own modules."""
    if not name:
        return True
    top = name.partition(".")[0]
    if top == "rulelab" or top == "__main__":
        return False
    if top in sys.stdlib_module_names or top == "builtins":
        return True
    module = sys.modules.get(name) or sys.modules.get(top)
    file = getattr(module, "__file__", None)
    if not file:
        return True
    path = str(Path(file).resolve())
    return any(path.startswith(root) for root in _LIBRARY_ROOTS) or "site-packages" in path or "dist-packages" in path


def _repr(obj: Any) -> str:
    """``repr(obj)``, or its type's name where the repr carries a memory address (which
    differs between processes)."""
    text = repr(obj)
    return f"<{type(obj).__module__}.{type(obj).__qualname__}>" if " at 0x" in text else text[:_MAX_REPR]


def _source(fn: Any) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        return repr((code.co_code, code.co_consts)) if code is not None else repr(fn)


def _names(code: types.CodeType) -> Iterable[str]:
    """Global and attribute names a code object (and the code nested in it) uses."""
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _names(c)


BY_NAME = "__fingerprint_by_name__"


def keyed_by_name(fn: Any) -> Any:
    """Mark ``fn`` to be keyed by its name only, not followed: a lookup in a registry
    whose entries are keyed on their own (each case's variants and reference), so that
    registering another entry leaves the digest of the code that calls it unchanged."""
    setattr(fn, BY_NAME, True)
    return fn


def fingerprint(*objects: Any) -> str:
    """A hex digest of ``objects`` (functions, numbers, strings) and of everything the
    functions reach: their source, the functions and constants they read through
    globals, module attributes and closures, followed transitively outside installed
    libraries."""
    h = hashlib.sha256()
    seen: set[int] = set()

    def add(tag: str, text: str) -> None:
        h.update(tag.encode())
        h.update(b"\x00")
        h.update(text.encode(errors="replace"))
        h.update(b"\x01")

    def visit_function(fn: types.FunctionType, label: str) -> None:
        if id(fn) in seen:
            return
        seen.add(id(fn))
        if getattr(fn, BY_NAME, False):
            add(label, f"{fn.__module__}.{fn.__qualname__}")
            return
        if _module_is_library(getattr(fn, "__module__", None)):
            add(label, f"{fn.__module__}.{fn.__qualname__}")
            # a library's closure may hold the user's code (custom_jvp.defjvps keeps the rules so)
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
                with contextlib.suppress(ValueError):  # an empty cell
                    visit(cell.cell_contents, f"{label}.{name}")
            return
        add(label, _source(fn))
        names = list(dict.fromkeys(_names(fn.__code__)))
        glob = fn.__globals__
        for name in names:
            if name not in glob:
                continue
            value = glob[name]
            if isinstance(value, types.ModuleType):
                if not _module_is_library(value.__name__):  # helpers used as module.name
                    for attr in names:
                        if attr in vars(value):
                            visit(vars(value)[attr], f"{value.__name__}.{attr}")
            else:
                visit(value, name)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                visit(cell.cell_contents, name)
            except ValueError:  # an empty cell
                add(name, "<empty>")
        for i, d in enumerate(fn.__defaults__ or ()):
            visit(d, f"{label}.default{i}")

    def visit(obj: Any, label: str) -> None:
        if isinstance(obj, functools.partial):
            visit(obj.func, label + ".func")
            for i, a in enumerate(obj.args):
                visit(a, f"{label}.arg{i}")
            for k, a in obj.keywords.items():
                visit(a, f"{label}.{k}=")
        elif isinstance(obj, types.MethodType):
            visit(obj.__func__, label)
        elif isinstance(obj, types.FunctionType):
            visit_function(obj, label)
        elif isinstance(obj, types.BuiltinFunctionType):
            add(label, f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', obj.__name__)}")
        elif isinstance(obj, _SCALARS):
            add(label, repr(obj)[:_MAX_REPR])
        elif isinstance(obj, (tuple, list)):
            add(label, f"{type(obj).__name__}[{len(obj)}]")
            for i, v in enumerate(obj[:_MAX_ITEMS]):
                visit(v, f"{label}[{i}]")
        elif isinstance(obj, (set, frozenset)):
            add(label, repr(sorted(_repr(v) for v in obj))[:_MAX_REPR])
        elif isinstance(obj, dict):
            add(label, f"dict[{len(obj)}]")
            for i, (k, v) in enumerate(list(obj.items())[:_MAX_ITEMS]):
                add(f"{label}.key{i}", _repr(k))
                visit(v, f"{label}[{k!r}]")
        elif isinstance(obj, np.ndarray):
            add(label, f"{obj.dtype}{obj.shape}{hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()}")
        elif type(obj).__module__.partition(".")[0] in ("mpmath", "numpy", "fractions", "decimal"):
            add(label, _repr(obj))
        elif not isinstance(obj, type):
            call = getattr(type(obj), "__call__", None)
            if isinstance(call, types.FunctionType) and not _module_is_library(type(obj).__module__):
                visit_function(call, label + ".__call__")  # a callable object of the user's own class, and its attributes
                if id(obj) not in seen:
                    seen.add(id(obj))
                    for k, v in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
                        visit(v, f"{label}.{k}")
            # a library wrapper (jax.custom_jvp, custom_vjp, jit, functools.wraps) around user code
            for attr in _WRAPPED:
                inner = getattr(obj, attr, None)
                if callable(inner):
                    visit(inner, f"{label}.{attr}")

    for i, obj in enumerate(objects):
        visit(obj, f"#{i}")
    return h.hexdigest()
