"""A/B experiments: definitions, exposure and outcome logs in Redis (``store``), sticky assignment
(``assignment``), team-draft interleaving (``interleaving``), how the arms compose a served slate (``arms``), the statistics (``stats``), their plots (``plots``) and
the harness that validates them (``validation``).

May import: ``ranker.live``, ``ranker.ranking``, ``ranker.evaluation``; statsmodels and scipy in ``stats`` only.
"""
