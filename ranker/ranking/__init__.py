"""Stage 3, ranking: the feature builder shared by simulation and serving (``features``) and the ranking policy
with its Plackett-Luce slate sampling and the safetensors artifact (``policy``).

May import: ``ranker.catalog``, ``ranker.retrieval`` and the foundation modules (``ranker.config``, ``defaults``, ``interactions``, ``errors``, ``devices``, ``lazy``); torch in ``network`` only (serving scores in numpy).
"""
