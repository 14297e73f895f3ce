"""A world's past: what a finished slate leaves behind, and the sessions played before the first episode.

:func:`record_slate` is how every shown slate becomes history, in episodes and before them: impressions and
position-debiased exposure on the item counters, clicks and purchases on them, and in the user's
:class:`~ranker.ranking.profile.UserProfile` the brands, colours and price levels they were shown
(``record_shown``) and each click, add-to-cart and purchase with the item's colour and price level (``record``),
as the live service records them.

:func:`play_history` gives a new world a past (``history_sessions_per_user``). A world's item counters start warm
(``history_impressions``): the shop has served before. Its users' profiles should too: a profile fills only as its
user comes back, and a world of 2,000 users that lives for the ~1,900 sessions of one training run has
``user_has_profile`` in about 8% of the standardiser's sample (issue 27), while a shop that has served for a while
knows most of the users who search it. The history is ``round(history_sessions_per_user * n_users)`` sessions drawn
like any other (who shops by activity, what for by interest and popularity), each shown one slate in retrieval
order (the service before a learned policy), the shopper acting on it under the world's click model. It draws from
a stream of its own, so the episodes after it meet the same shoppers and searches as in a world without history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.catalog import SimCatalog
from ranker.ranking.features import UserProfile, examination_prior

_EXPOSURE = examination_prior(np.arange(256))  # exposure per position, read without a call per item


def record_slate(catalog: SimCatalog, counts: np.ndarray, profile: UserProfile, rows: np.ndarray, outcomes: Sequence[tuple[Any, ...]]) -> None:
    """Fold a shown slate into the item ``counts`` and the user's ``profile``: catalog ``rows`` in display order,
    ``outcomes`` per position ``(slot, examined, click, cart, purchase)``."""
    levels = catalog.price_level_of_row[rows]
    profile.record_shown(catalog.brand_of_row[rows].tolist(), catalog.colour_of_row[rows].tolist(), levels)
    for position, (row, (_slot, _examined, click, cart, purchase)) in enumerate(zip(rows.tolist(), outcomes)):
        row_counts = counts[row]
        row_counts[0] += 1
        row_counts[3] += _EXPOSURE[position]
        if not click:
            continue
        row_counts[1] += 1
        row_counts[2] += purchase
        for kind, happened in (("click", True), ("add_to_cart", cart), ("purchase", purchase)):
            if happened:
                profile.record(
                    kind=kind,
                    category=catalog.category_of_row[row],
                    brand=catalog.brand_of_row[row],
                    price=float(catalog.prices[row]),
                    text_vector=catalog.text[row],
                    colour=catalog.colour_of_row[row],
                    level=float(levels[position]),
                )


def play_history(env: Any, n_sessions: int, rng: np.random.Generator) -> None:
    """``n_sessions`` sessions of the world of ``env`` (a :class:`envs.shopping.SlateShoppingEnv` right after its world
    was made), each shown the top L of its retrieval; their slates are recorded (:func:`record_slate`)."""
    world, catalog, click_model = env.world, env.catalog, env.click_model
    length = env.config.slate_size
    profiles: dict[int, UserProfile] = env.profiles
    saved = getattr(env, "session", None)
    for _ in range(n_sessions):
        session = env.session = world.sample_session(rng)
        rows = env._retrieve(session.query).rows[:length]
        vectors = catalog.text[rows]
        similarity = vectors @ vectors.T
        above = np.array([similarity[position, :position].max() if position else 0.0 for position in range(len(rows))])
        discount = world.duplicate_factor(above)
        utilities = world.utilities(session, rows, vectors)
        active, outcomes = True, []
        for position in range(len(rows)):
            examined = click_model.examined(position, active, rng)
            click = cart = purchase = False
            if examined:
                click = bool(rng.random() < utilities.attraction[position] * discount[position])
                cart = click and bool(rng.random() < utilities.cart[position] * discount[position])
                purchase = cart and bool(rng.random() < utilities.purchase[position])
                active = click_model.goes_on(click, purchase, utilities.patience, rng)
            outcomes.append((position, examined, click, cart, purchase))
        profile = profiles.get(session.user) or UserProfile()
        record_slate(catalog, env.counts, profile, rows, outcomes)
        profiles[session.user] = profile
    if saved is not None:
        env.session = saved
