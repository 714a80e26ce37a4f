"""Names of a package that load their module on first use (PEP 562).

``scratchlm``'s packages export their public names this way, so that the
``scratchlm`` command can tune its process (``kernels.cpu.tune_process``)
before NumPy loads: OpenBLAS reads its settings once, as NumPy imports it.
``import scratchlm`` itself loads nothing but this.
"""

from __future__ import annotations

import importlib


def lazy_names(package: str, where: dict):
    """A module ``__getattr__`` for ``package``: ``where`` maps each name to its module.

    A name found is kept in the package's namespace (loaded once); a
    submodule's name imports the submodule, as after ``import package.name``.
    """
    def __getattr__(name):
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
        else:
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
