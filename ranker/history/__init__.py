"""A shop's logged history brought in: ``ranker import events FILE`` (:mod:`ranker.history.importer`) reads
Metarank-style JSON lines or an OBP-style logged-bandit table (:mod:`ranker.history.formats`), warms the item
counters and user profiles, and writes the rankings and interactions into the event log.

May import: the stages up to ``ranker.experiments`` and the foundation modules. Never ``learning``, ``serving`` or
``api``: it names users and queries with :mod:`ranker.live.identity`, as the service does.
"""
