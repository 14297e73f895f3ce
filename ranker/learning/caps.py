"""Contribution caps: no single user (pseudonym) moves the policy more than a handful of shoppers would.

A ranking that learns from clicks can be pushed by whoever sends them. Two caps bound what one source can do:

- **Per ranking**: a position's reward counts each outcome type once (click, add to cart, purchase), however
  many events of that type arrive for it (:class:`ranker.learning.join.Joiner`), and a ranking with more events
  than a shopper could produce (more than ``max_events_per_position`` of one type at one position) is skipped as
  ``spam`` and counted, never learned from.
- **Per user**: inside a training window (the batch with the replay window) and the gate's hold-out, the
  rankings of one user weigh at most ``user_cap`` rankings in all (:func:`contribution_weights`): a user with
  ``n > user_cap`` rankings gets weight ``user_cap / n`` on each. The critic's fit, the PPO loss and the gate's
  hold-out (:func:`capped_holdout`) all apply it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from ranker.learning.join import Trajectory


def contribution_weights(users: Sequence[str], cap: float) -> np.ndarray:
    """[n] per ranking: ``min(1, cap / rankings of its user)``."""
    counts = Counter(users)
    return np.array([min(1.0, cap / counts[user]) for user in users], dtype=np.float64)


def step_weights(trajectories: Sequence[Trajectory], trajectory_index: np.ndarray, cap: float) -> np.ndarray:
    """[N] the contribution weight of every replayed decision (its ranking's)."""
    return contribution_weights([t.event.user_key for t in trajectories], cap)[trajectory_index]


def capped_holdout(trajectories: Sequence[Trajectory], cap: int) -> list[Trajectory]:
    """The newest ``cap`` rankings of each user (the off-policy estimators take no weights: excess rankings are left out)."""
    seen: Counter[str] = Counter()
    kept = []
    for trajectory in reversed(trajectories):
        seen[trajectory.event.user_key] += 1
        if seen[trajectory.event.user_key] <= cap:
            kept.append(trajectory)
    return kept[::-1]
