"""Stage 1, the catalog: items and their loaders (``items``), safe picture decoding (``images``), the item store
(``store``) and the deterministic demo shop (``demo``).

May import: the standard library, numpy, pydantic, Pillow, SQLite. Nothing else of ``ranker``: every other stage
builds on this one. (``pyproject.toml``'s import-linter contracts check every package's rule in ``make lint``.)
"""
