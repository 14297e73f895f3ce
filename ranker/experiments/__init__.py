"""A/B experiments: definitions, exposure and outcome logs in Redis (``store``), sticky assignment
(``assignment``), team-draft interleaving (``interleaving``), how the arms compose a served slate (``arms``), the statistics (``stats``), their plots (``plots``) and
the harness that validates them (``validation``).

May import: the stages below it (``catalog`` to ``evaluation``, ``envs``) and the foundation modules (``ranker.config``, ``defaults``, ``interactions``, ``errors``, ``devices``, ``lazy``); statsmodels and scipy in
``stats`` only. Never ``learning``, ``serving`` or ``api``.
"""
