"""The built-in cases. Every module in this package registers its cases on import;
adding a case is adding a module here, with no edit elsewhere."""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
