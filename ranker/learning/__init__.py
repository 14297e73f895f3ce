"""Stage 5, learning: offline PPO training in the simulator (``offline``); the
online learner (``online``: join, replay, update, gate, commit) with its world, the live catalog (``world``), and the
supervisor that runs it beside a server (``supervisor``).

May import: every lower stage (``catalog``, ``retrieval``, ``ranking``, ``live``, ``envs``, ``evaluation``,
``experiments``) and the foundation modules (``ranker.config``, ``defaults``, ``interactions``, ``errors``, ``devices``, ``lazy``). Never ``serving``, ``history`` or ``api``.
"""
