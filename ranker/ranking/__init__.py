"""Stage 3, ranking: the feature builder shared by simulation and serving (``features``) and the ranking policy
with its Plackett-Luce slate sampling and the safetensors artifact (``policy``).

May import: ``ranker.catalog``, ``ranker.retrieval``; torch in ``policy`` only.
"""
