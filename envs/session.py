"""``SessionShopping``: a search session of up to H pages, each a slate composed as in ``SlateShopping``.

An episode is one shopper's session. Each page is a slate of L positions filled one action at a time from K
candidates, with the observation of :mod:`envs.shopping` (same layout) whose session features come from a
:class:`~ranker.ranking.profile.SessionState` the environment keeps: the page of the current query, the
rephrasings so far, the text vectors of the items clicked in the session and the items shown in it. After the L-th
placement the shopper has acted on the page (the click model of :mod:`envs.click_models`, the utilities of
:mod:`envs.shoppers`) and then:

- **buys**: a purchase on the page ends the session (satisfied);
- **pages on** with probability ``page_on_rate``: the same query's next page. Items shown on earlier pages of this
  query are not candidates again (retrieval reads ``K + (H - 1) L`` deep, so K remain);
- **rephrases** with probability ``rephrase_rate``: the shopper types a phrase whose text is nearer the hidden
  target than the current one, chosen at random among the target's own phrases in the bank (plain or stated) and
  the bank's phrase nearest the target (any item's); its page 1 follows. A stated phrase's limit, colour or brand bind the shopper as at the start of a session.
  With no nearer phrase, or a picture-only search (no words to change), the shopper pages on instead;
- **leaves** otherwise (abandonment), or after the H-th page, or when no candidate is left.

The hidden target is never observed: a policy learns it from behaviour (``sim_to_clicked``, ``session_clicks``:
the items clicked on earlier pages sit near it). Users return across sessions with persistent taste: the world
(hidden preferences, counters, profiles) lives across episodes as in ``SlateShopping``, and the profile records
every page (:func:`envs.history.record_slate`). The reward is the objective of :mod:`envs.shopping` per placed
item, times ``page_discount ** (p - 1)`` on page p (default 1: purchases per session).

**Where the rates come from** (``envs.config.SessionConfig``; never tuned to favour a policy):

- *Paging on.* Jansen & Spink (2006, "How are we searching the World Wide Web? A comparison of nine search engine
  transaction logs", Information Processing & Management 42(1)) find that the share of searchers who look only at
  the first results page grew from 1997 to 2002, to roughly a half to three quarters of searchers in the 2001-2002
  logs: about a quarter to a half went past page 1. The issue that asked for this model summarises search logs as
  20-35% page continuation. ``page_on_rate = 0.25`` sits inside both ranges, toward their lower ends.
- *Rephrasing.* Query reformulation is a common next step in web search sessions (Jansen, Booth & Spink 2009,
  "Patterns of query reformulation during Web searching", JASIST 60(7)) and in e-commerce search, where it most
  often specialises the query, adding or replacing terms such as attributes (Hirsch, Guy, Nus, Dagan & Kurland,
  "Query Reformulation in E-Commerce Search", SIGIR 2020, on eBay's logs): hence "a phrase nearer the target".
  We found no published probability of rephrasing right after a page without a purchase that this model could
  copy; the reformulation shares those studies give per query vary widely with the engine, the period and the
  definition. ``rephrase_rate = 0.15`` is a modest assumption below the page-on rate; change it with
  ``rephrase_rate=...`` and the comparison tables with it.
- *Leaving* takes the rest: 0.60 of the sessions that did not buy on a page end there.

**Paired evaluation.** Each session draws a fixed block from the world's session stream: who shops and for what
(as in ``SlateShopping``), the uniforms of every page decision, and one uniform per (page, position, event) for the
outcomes (examination, click, cart, purchase, reading on). Every policy evaluated from the same seed meets the
same shoppers with the same searches, and the same luck at the same place: a shopper who would click an item of a
given attraction at position 3 of page 2 does so under every policy (common random numbers), so per-session
differences between policies are paired tightly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from envs.catalog import Retrieved
from envs.config import SessionConfig, make_session_config
from envs.shopping import SlateShoppingEnv
from ranker.ranking.features import SessionState

OUTCOME_DRAWS = 5  # per (page, position): examination (position-based model), click, cart, purchase, reading on
EVENTS = ("purchase", "page_on", "rephrase", "leave", "last_page", "exhausted")


class _Draw:
    """A one-number stand-in for a Generator: the click model's ``rng.random()`` reads the uniform set for it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def random(self) -> float:
        return self.value


class SessionShoppingEnv(SlateShoppingEnv):
    """Serve the pages of a simulated shopper's search session; keyword arguments: those of
    :class:`~envs.shopping.SlateShoppingEnv` and of :class:`envs.config.SessionConfig`."""

    def __init__(self, catalog: Any = "demo", *, render_mode: str | None = None, **config: Any):
        session_fields = {name: config.pop(name) for name in list(config) if name in SessionConfig.model_fields}
        self.session_config: SessionConfig = make_session_config(**session_fields)
        super().__init__(catalog, render_mode=render_mode, **config)
        pages, length = self.session_config.max_pages, self.config.slate_size
        self.retrieval_depth = min(self.config.n_candidates + (pages - 1) * length, self.catalog.n_items)  # K left after H - 1 pages
        self._draw = _Draw()
        self.state = SessionState()

    # ------------------------------------------------------------ a session
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a session on its first page. ``options``: ``{"user": u}`` picks the shopper."""
        observation, info = super().reset(seed=seed, options=options)
        info["page"] = 1
        return observation, info

    def _start_session(self) -> None:
        pages, length = self.session_config.max_pages, self.config.slate_size
        rng = self._session_rng  # a fixed number of draws per session, whatever happens in it
        self._decisions = rng.random((pages, 2)).tolist()  # (which way, which phrase) after each page
        self._uniforms = rng.random((pages, length, OUTCOME_DRAWS)).tolist()
        self.pages_shown = 0
        self.page_events: list[str] = []
        self._clicked: list[np.ndarray] = []
        self._shown_ids: set[str] = set()
        self._shown_for_query: list[int] = []  # catalog rows shown on earlier pages of the current query
        self.state = SessionState()
        self._open_session_page()

    def _open_session_page(self) -> bool:
        """Open the next page of the current query; False when no candidate is left for it."""
        found = self._page_candidates()
        if len(found.rows) == 0:
            return False
        self.pages_shown += 1
        self._open_page(self.session, found, self.state)
        return True

    def _page_candidates(self) -> Retrieved:
        """The K best of the current query's retrieval that earlier pages of this query did not show."""
        found = self._retrieve(self.session.query)
        k = self.config.n_candidates
        if self._shown_for_query:
            shown = set(self._shown_for_query)
            keep = np.array([index for index, row in enumerate(found.rows.tolist()) if row not in shown][:k], dtype=np.intp)
            return Retrieved(rows=found.rows[keep], fused=found.fused[keep], channels={name: values[keep] for name, values in found.channels.items()})
        if len(found.rows) <= k:
            return found
        return Retrieved(rows=found.rows[:k], fused=found.fused[:k], channels={name: values[:k] for name, values in found.channels.items()})

    # ---------------------------------------------------------------- steps
    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        page = self.pages_shown
        observation, reward, page_done, truncated, info = super().step(action)
        if page > 1 and self.session_config.page_discount != 1.0:
            reward *= self.session_config.page_discount ** (page - 1)
        info["page"] = page
        if not page_done:
            return observation, reward, False, truncated, info
        event = self._after_page()
        self.page_events.append(event)
        info["page_event"] = event
        ended = event in ("purchase", "leave", "last_page", "exhausted")
        if ended:
            info["pages"] = self.pages_shown
        return (observation if ended else self._observation()), reward, ended, truncated, info

    def _outcome(self, position: int, slot: int, attraction: float, discount: float) -> tuple[bool, bool, bool, bool]:
        """As :meth:`SlateShoppingEnv._outcome`, from this session's uniforms for (page, position)."""
        u = self._uniforms[self.pages_shown - 1][position]
        draw, utilities = self._draw, self.utilities
        draw.value = u[0]
        examined = self.click_model.examined(position, self._active, draw)
        click = cart = purchase = False
        if examined:
            click = u[1] < attraction
            cart = click and u[2] < utilities.cart[slot] * discount
            purchase = cart and u[3] < utilities.purchase[slot]
            draw.value = u[4]
            self._active = self.click_model.goes_on(click, purchase, utilities.patience, draw)
        return examined, bool(click), bool(cart), bool(purchase)

    def _commit(self) -> None:
        """The page becomes history (counters, profile) and session state (what was shown, what was clicked)."""
        super()._commit()
        shown = [int(self.rows[slot]) for slot, *_ in self.outcomes]
        self._shown_for_query.extend(shown)
        self._shown_ids.update(self.catalog.item_ids[row] for row in shown)
        self._clicked.extend(self.catalog.text[self.rows[slot]] for slot, _examined, click, *_ in self.outcomes if click)

    def _after_page(self) -> str:
        """What the shopper does after the page just shown; opens the next page when they go on."""
        if any(purchase for *_, purchase in self.outcomes):
            return "purchase"
        if self.pages_shown >= self.session_config.max_pages:
            return "last_page"
        which, pick = self._decisions[self.pages_shown - 1]
        config = self.session_config
        if which >= config.page_on_rate + config.rephrase_rate:
            return "leave"
        event = "page_on"
        if which >= config.page_on_rate and self._rephrase(pick):
            event = "rephrase"
        clicked = np.stack(self._clicked) if self._clicked else None
        page = 1 if event == "rephrase" else self.state.page + 1
        rephrasings = self.state.rephrasings + (event == "rephrase")
        self.state = SessionState(page=page, rephrasings=rephrasings, clicked=clicked, shown=frozenset(self._shown_ids))
        return event if self._open_session_page() else "exhausted"

    def _rephrase(self, pick: float) -> bool:
        """Switch the session to a phrase of the target nearer the target than the current one (``pick`` chooses
        among them); False when there is none or the search has no words."""
        session, catalog = self.session, self.catalog
        if "text" not in session.mode:
            return False
        nearer = self.nearer_phrases()
        if not nearer:
            return False
        query = nearer[min(int(pick * len(nearer)), len(nearer) - 1)]
        bank = catalog.intents
        assert bank is not None
        limit = float(bank.asked_price_max[query])
        self.session = dataclasses.replace(
            session,
            query=query,
            price_limit=None if math.isnan(limit) else limit,
            colour=int(bank.asked_colour[query]),
            brand=int(bank.asked_brand[query]),
        )
        self._shown_for_query = []
        return True

    def nearer_phrases(self) -> list[int]:
        """The bank rows the shopper may rephrase to, in bank order: those of the target's typed phrases, and of the
        bank's typed phrase nearest the target (:meth:`sub_intent_phrase`), whose text is nearer the target (cosine
        of the MiniLM vectors) than the current phrase's."""
        catalog, session = self.catalog, self.session
        target = catalog.text[session.target]
        rows = {int(row) for group in (catalog.queries_of_item, catalog.stated_queries_of_item) for row in group.get(session.target, ())}
        rows.add(self.sub_intent_phrase())
        current = float(catalog.query_text[session.query] @ target)
        return sorted(row for row in rows if float(catalog.query_text[row] @ target) > current + 1e-6)

    # --------------------------------------------------------- ground truth
    def sub_intent_phrase(self) -> int:
        """The sub-intent: the typed phrase of the bank (any item's, plain or stated) whose text is nearest the
        hidden target: the words that would have said best what the shopper wants."""
        return int(self.catalog.nearest_typed_phrase()[self.session.target])

    def sub_intent_expected_rewards(self) -> tuple[np.ndarray, np.ndarray]:
        """The intent-blind oracle's :meth:`expected_rewards` on page 1; from page 2 on, told the sub-intent
        (:meth:`sub_intent_phrase`), relevance reads the cosine to it instead of to the query."""
        if self.pages_shown <= 1:
            return self.intent_blind_expected_rewards()
        return self.phrase_expected_rewards(self.sub_intent_phrase())

    def render(self) -> str | None:
        text = super().render()
        if text is None:
            return None
        return f"page {self.state.page} of query {self.state.rephrasings + 1} (page {self.pages_shown} of the session)\n{text}"


__all__ = ["EVENTS", "SessionShoppingEnv"]
