"""A module imported on first use: heavy libraries that only some requests need stay out of a serving process.

``stats = LazyModule("scipy.stats")`` reads like the module; the import happens at the first attribute access
(an experiment report, a plot), not when the serving code is imported (issue 32: one API worker in 300 MB).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name`` and imports it when an attribute is first read."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (imported)'}>"
