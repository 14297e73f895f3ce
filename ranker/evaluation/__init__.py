"""Evaluation: off-policy estimators over logged rankings (``ope``) and policies compared in the simulator
(``simulation``).

May import: ``ranker.catalog``, ``ranker.retrieval``, ``ranker.ranking``, ``ranker.live``; ``envs`` in
``simulation`` only.
"""
