"""Stage 2, retrieval: the encoders (``encoders``: MiniLM, EfficientNet-Lite0, CLIP), the FAISS indexes
(``index``), the search engine (``engine``) and the numpy-only score fusion (``fusion``) that the simulator shares.

May import: ``ranker.catalog`` and the foundation modules (``ranker.config``, ``defaults``, ``interactions``, ``errors``, ``devices``, ``lazy``). Heavy libraries (torch, transformers, faiss) only in ``encoders``,
``clip``, ``onnx_models``, ``bridge``, ``index`` and ``engine``, imported when used; ``fusion`` is numpy alone, so ``envs`` can use it without loading them.
"""
