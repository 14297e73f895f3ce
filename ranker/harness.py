"""Simulated shoppers against a running service, over HTTP: what ``ranker ab simulate`` and ``bench/online.py`` drive.

A :class:`Shopper` is one seeded shopper simulator (``envs``) built on the
service's own catalog (its data directory), so the item ids the service
returns are items the simulator knows. One session (:func:`session_through`):
the simulator draws a user and a query; ``POST /v1/rank`` with them; the
served slate is played position by position (clicks, add-to-carts,
purchases drawn from the simulated user's hidden preferences); the outcomes go
back with ``POST /v1/feedback``. Items the simulator did not retrieve for the
query are replaced by its next candidates (counted as ``missing``).

:class:`ranker.client.ApiClient` carries the requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ranker.client import ApiClient
from ranker.interactions import EVENT_TYPES

EVENT_KINDS = EVENT_TYPES  # the feedback a shopper sends, in the funnel's order


class Shopper:
    """One seeded simulator that plays sessions against a server (or a policy, in process)."""

    def __init__(self, catalog: Any, seed: int, **settings: Any):
        """``catalog``: the service's data directory, or a ``envs.catalog.SimCatalog`` built from its engine."""
        import gymnasium as gym

        import envs  # noqa: F401  (registers the environments)

        settings.setdefault("query_modes", {"text": 1.0})  # the queries go over HTTP as text
        self.env = gym.make("envs/SlateShopping-v0", catalog=str(catalog) if isinstance(catalog, Path) else catalog, **settings)
        self.simulator = self.env.unwrapped
        self.seed = seed
        self.started = False

    def reset(self) -> dict[str, Any]:
        observation, info = self.env.reset(seed=None if self.started else self.seed)
        self.started = True
        self.observation = observation
        return info

    def skip(self, sessions: int) -> None:
        """Draw and drop ``sessions`` sessions: the next one is the one a run that sent them would meet next."""
        for _ in range(sessions):
            self.reset()

    def play_slots(self, slots: list[int]) -> tuple[float, list[dict[str, Any]]]:
        """Play the slate; the sampled reward and each position's outcome (:attr:`last_expected`: the slate's exact
        expected reward)."""
        self.last_slots = list(slots)
        reward, outcomes = 0.0, []
        for slot in slots:
            self.observation, step_reward, _, _, info = self.env.step(slot)
            reward += step_reward
            outcomes.append(info)
        self.last_purchases = sum(bool(outcome["purchase"]) for outcome in outcomes)
        return reward, outcomes

    def play_policy(self, policy: Any) -> float:
        """Play the session with an in-process policy; the sampled reward (:attr:`last_expected`: the exact expected one)."""
        total, done, self.last_slots, self.last_purchases = 0.0, False, [], 0
        while not done:
            slot = policy(self.env, self.observation)
            self.last_slots.append(slot)
            self.observation, reward, done, _, info = self.env.step(slot)
            total += reward
            self.last_purchases += bool(info["purchase"])
        return total

    @property
    def last_expected(self) -> float:
        """The exact expected reward of the slate last played, for this session's shopper (what a benchmark scores
        it by, free of outcome noise); computed only when asked."""
        return self.simulator.expected_slate_reward(self.last_slots)

    def slots_for(self, item_ids: list[str]) -> tuple[list[int], int]:
        """The simulator's candidate slots of a served slate; items it did not retrieve are replaced by its next candidates."""
        row_of = {self.simulator.catalog.item_ids[row]: slot for slot, row in enumerate(self.simulator.rows)}
        slots = [row_of[item] for item in item_ids if item in row_of]
        missing = len(item_ids) - len(slots)
        for slot in range(len(self.simulator.rows)):
            if len(slots) >= self.simulator.config.slate_size:
                break
            if slot not in slots:
                slots.append(slot)
        return slots[: self.simulator.config.slate_size], missing


def session_through(client: ApiClient, shopper: Shopper, info: dict[str, Any]) -> tuple[float, dict[str, Any], int]:
    """Play the session ``info`` (from :meth:`Shopper.reset`) through the service; (reward, rank response, items missing)."""
    slate_size = shopper.simulator.config.slate_size
    body = client.post(
        "/v1/rank",
        {
            "user_id": f"shopper-{info['user']}",
            "query": {"text": info["query"]},
            "num_results": slate_size,
            "num_candidates": shopper.simulator.config.n_candidates,
        },
    )
    items = [item["item_id"] for item in body["items"]]
    slots, missing = shopper.slots_for(items)
    reward, outcomes = shopper.play_slots(slots)
    events = []
    for outcome in outcomes:
        if outcome["item_id"] not in items:
            continue
        for kind in EVENT_KINDS:
            if outcome[kind]:
                events.append({"event_id": f"{body['ranking_id']}-{outcome['position']}-{kind}", "item_id": outcome["item_id"], "type": kind})
    if events and body.get("logged", True):
        client.post("/v1/feedback", {"ranking_id": body["ranking_id"], "events": events})
    return reward, body, missing
