"""Loading a user's own cases: a Python file or an importable module that calls
``rulelab.register``. Loaded cases join the registry and are swept like the catalog's."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from rulelab.core.errors import UsageError
from rulelab.model.case import CaseError, cases


class ModuleLoadError(UsageError):
    """A user module could not be found or failed while importing."""


def _where(exc: BaseException, path: Path | None) -> str:
    """'file, line N' of the innermost frame inside the user's file (or of a syntax error)."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{exc.filename}, line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    if path is not None:
        mine = [f for f in frames if Path(f.filename).resolve() == path]
        frames = mine or frames
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}, line {f.lineno}"


def _message(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def module_key(ref: str) -> str:
    """How a module reference is recorded in a run, so a resumed run loads it again:
    the absolute path of a file, else the module name as given."""
    path = Path(ref)
    return str(path.resolve()) if ref.endswith(".py") or path.is_file() else ref


def load_module(ref: str) -> list[str]:
    """Import a user module by file path (``my_cases.py``) or module name
    (``mypkg.cases``) and return the names of the cases it registered. Loading the same
    file twice in one process imports it once."""
    before = {c.name for c in cases()}
    path = Path(ref)
    try:
        if ref.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ModuleLoadError(f"--module {ref}: no such file")
            resolved = path.resolve()
            name = f"rulelab_user_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, resolved)
                if spec is None or spec.loader is None:
                    raise ModuleLoadError(f"--module {ref}: not a Python file that can be imported")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)
                    raise
        else:
            resolved = None
            importlib.import_module(ref)
    except ModuleLoadError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and ref.startswith(exc.name):
            raise ModuleLoadError(
                f"--module {ref}: no file or importable module of that name ({_message(exc)}); give the path "
                "of a .py file, or the name of a module on the Python path"
            ) from None
        raise ModuleLoadError(f"--module {ref} failed to import at {_where(exc, None)}: {_message(exc)}") from None
    except CaseError as exc:
        raise ModuleLoadError(f"--module {ref} registers a malformed case at {_where(exc, resolved)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - anything a user module raises is reported, not re-raised
        raise ModuleLoadError(f"--module {ref} failed to import at {_where(exc, resolved)}: {_message(exc)}") from None
    except SystemExit as exc:
        raise ModuleLoadError(f"--module {ref} called exit({exc.code}) while importing") from None
    return [c.name for c in cases() if c.name not in before]


def load_modules(refs: Iterable[str]) -> list[str]:
    """Load each module (see :func:`load_module`); the names of the cases they added."""
    added: list[str] = []
    for ref in refs:
        added += load_module(ref)
    return added
