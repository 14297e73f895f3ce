"""Stage 2, retrieval: the encoders (``encoders``: MiniLM, EfficientNet-Lite0, CLIP), the FAISS indexes
(``index``), the search engine (``engine``) and the numpy-only score fusion (``fusion``) that the simulator shares.

May import: ``ranker.catalog``. Heavy libraries (torch, transformers, faiss) only in ``encoders``, ``index`` and
``engine``; ``fusion`` is numpy alone, so ``envs`` can use it without loading them.
"""
