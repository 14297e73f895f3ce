"""Evaluation: off-policy estimators over logged rankings (``ope``) and policies compared in the simulator
(``simulation``) against the baselines fitted on logged sessions (``baselines``: LambdaMART, LinUCB, a critic's
greedy ranking).

May import: ``ranker.catalog``, ``ranker.retrieval``, ``ranker.ranking``, ``ranker.live``, ``envs`` and
the foundation modules (``ranker.config``, ``defaults``, ``interactions``, ``errors``, ``devices``, ``lazy``). Never
``experiments``, ``learning``, ``serving`` or ``api``.
"""
