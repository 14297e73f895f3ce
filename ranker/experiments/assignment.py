"""Deterministic, sticky assignment of users to experiment buckets and arms.

A unit (the pseudonymised user key, or the session when there is no user)
lands in one of :data:`BUCKETS` buckets by a hash of ``(salt, unit)``; the
same pair gives the same bucket in every process and on every request, with
no state to share. Arms take consecutive bucket ranges in proportion to
their weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

BUCKETS = 10_000


def bucket(salt: str, unit: str) -> int:
    """The unit's bucket in ``[0, BUCKETS)``: the first 8 bytes of sha256(salt NUL unit), modulo BUCKETS."""
    digest = hashlib.sha256(f"{salt}\0{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def split_points(weights: Sequence[float]) -> list[int]:
    """Upper bucket bounds of the arms (the last one is ``BUCKETS``)."""
    total = float(sum(weights))
    bounds, running = [], 0.0
    for weight in weights:
        running += weight
        bounds.append(round(BUCKETS * running / total))
    bounds[-1] = BUCKETS
    return bounds


def arm_of(salt: str, unit: str, weights: Sequence[float]) -> int:
    """Index of the arm ``unit`` is assigned to, for arms sharing traffic by ``weights``."""
    position = bucket(salt, unit)
    for index, bound in enumerate(split_points(weights)):
        if position < bound:
            return index
    return len(weights) - 1
