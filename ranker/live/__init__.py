"""Stage 4, live state in Redis: connections and the embedded server (``backend``), the event log of rankings
and interactions (``events``), item counters and user profiles (``state``), policy versions and the serving pointer
(``registry``), and catalog writes shared between processes (``catalog_stream``).

May import: ``ranker.catalog``, ``ranker.retrieval``, ``ranker.ranking`` and the foundation modules (``ranker.config``, ``defaults``, ``interactions``, ``errors``, ``devices``, ``lazy``); redis-py. Never
``envs``, ``evaluation``, ``experiments``, ``learning`` or ``serving``.
"""
