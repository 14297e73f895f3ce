"""The shop's vocabulary of feedback: the event types and what each is worth.

One home, at the bottom of the layers, for what the simulator (``envs``), the event log (``ranker.live.events``),
the API's schemas and the A/B harness all speak: a shown item is clicked, added to the cart or bought, and a
position's reward is the weighted sum of those (DESIGN.md, "The ranking MDP").
"""

from __future__ import annotations

from typing import Final, Literal, get_args

EventType = Literal["click", "add_to_cart", "purchase"]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)  # in the funnel's order

# A position's reward: the weighted sum of its events (a purchase also counts its click and cart add upstream).
REWARD_WEIGHTS: Final[dict[str, float]] = {"click": 0.1, "add_to_cart": 0.3, "purchase": 1.0}
