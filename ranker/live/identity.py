"""The keyed names the live state is filed under: a user's pseudonym and a query's hash.

A user id never reaches Redis: it is replaced at the door by its keyed HMAC (:func:`pseudonymise`), which finds the
user's pseudonym (:mod:`ranker.live.state`) and their experiment arms. A query is named by :func:`query_hash` (its
text and picture): the session's pages of one query share it. The service, the API's per-user rate limits and the
history importer all name users and queries this way, so it lives here, below all three.
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonymise(user_id: str, secret: bytes) -> str:
    """The keyed HMAC of a user id: it finds the user's pseudonym (``ranker.live.state``) and their experiment arms."""
    return hmac.new(secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def query_hash(text: str | None, image: bytes | None) -> str:
    digest = hashlib.sha256((text or "").encode("utf-8"))
    digest.update(b"\0")
    digest.update(image or b"")
    return digest.hexdigest()[:16]
