"""The session environment: checkers, determinism, and its dynamics worked by hand on small shops."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.catalog import SimCatalog
from envs.evaluation import mean_ci95
from envs.intents import STATED, IntentBank
from envs.policies import OraclePolicy, RandomPolicy
from envs.session import SessionShoppingEnv
from envs.tiny import TINY_CONFIG, tiny_catalog
from ranker.ranking.features import CONTEXT_FEATURES, FEATURES

CLICK_ALWAYS_NEVER_BUY = {"click_threshold": -50.0, "cart_threshold": 50.0}  # every examined item clicked, none carted


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def rephrasing_catalog() -> SimCatalog:
    """Four items; the target A has a far plain phrase (cosine 0.6) and a near stated one (cosine 0.95)."""
    return SimCatalog(
        item_ids=["A", "B", "C", "D"],
        titles=["Trail Runner Shoe", "Road Runner Shoe", "Trail Runner Sock", "Desk Lamp"],
        category_codes=np.array([0, 0, 0, 1]),
        category_names=["Shoes", "Lamps"],
        brand_codes=np.array([0, 1, 0, 2]),
        brand_names=["Ridge", "Velo", "Lumen"],
        prices=np.array([80.0, 70.0, 20.0, 30.0]),
        text=np.stack([unit(1, 0, 0, 0), unit(0.8, 0.6, 0, 0), unit(0.7, 0, 0.7, 0), unit(0.1, 0, 0, 1)]),
        has_image=np.zeros(4, dtype=bool),
        image=None,
        image_in_text=None,
        query_texts=["runner", "trail runner shoe ridge"],
        query_items=np.array([0, 0]),
        query_text=np.stack([unit(0.6, 0.8, 0, 0), unit(0.95, 0.3122, 0, 0)]),
        intents=IntentBank.from_rows([{}, {"kind": STATED, "asked_brand": 0}]),
        source="rephrasing",
    )


def session_env(catalog: SimCatalog | None = None, **kwargs) -> SessionShoppingEnv:
    config = {**TINY_CONFIG, "intent_share": 0.0, **kwargs}
    return SessionShoppingEnv(catalog or tiny_catalog(), **config)


def play(env: gym.Env, policy, seed: int | None) -> list[dict]:
    """One session: the info of every step."""
    observation, _ = env.reset(seed=seed)
    infos, done = [], False
    while not done:
        observation, reward, done, _, info = env.step(policy(env, observation))
        infos.append({**info, "reward": reward, "observation": observation})
    return infos


class FirstAvailable(gym.ActionWrapper):
    """Masked actions become the first available candidate: SB3's checker samples actions without the mask (which
    MaskablePPO always applies), and the environment refuses a masked one."""

    def action(self, action):
        masks = self.env.unwrapped.action_masks()
        return int(action) if masks[int(action)] else int(np.argmax(masks))


# ------------------------------------------------------------ the checkers
@pytest.mark.parametrize("env_id", envs.SESSION_ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass(env_id, sim_catalog):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, **({} if env_id.endswith("Tiny-v0") else {"catalog": sim_catalog}))
    check_env(env.unwrapped, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 notes that Dict observations need MultiInputPolicy: they do
        sb3_check_env(FirstAvailable(env.unwrapped))
    observation, info = env.reset(seed=0)
    assert env.observation_space.contains(observation) and info["page"] == 1
    assert "Session" in env_id and env_id in envs.ENV_IDS


# ------------------------------------------------------------ determinism
def rollout(env: gym.Env, seed: int, sessions: int) -> list[tuple]:
    policy, trace = RandomPolicy(seed), []
    for session in range(sessions):
        for info in play(env, policy, seed if session == 0 else None):
            trace.append((info["item_id"], info["reward"], info["click"], info["page"], info.get("page_event"), info["observation"]["features"].tobytes()))
    return trace


def test_same_seed_same_sessions_other_seed_other_sessions(sim_catalog):
    first = rollout(gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog), seed=3, sessions=15)
    again = rollout(gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog), seed=3, sessions=15)
    other = rollout(gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog), seed=4, sessions=15)
    assert first == again
    assert first != other
    assert any(event in ("page_on", "rephrase") for *_, event, _ in first if event), "some sessions go past page 1"


def test_every_policy_meets_the_same_shoppers_and_decisions(sim_catalog):
    """Common random numbers: the same users, queries and after-page uniforms whatever the policy did."""
    env = gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog)
    seen = []
    for policy in (RandomPolicy(0), OraclePolicy()):
        sessions = []
        for session in range(12):
            _, info = env.reset(seed=8 if session == 0 else None)
            sessions.append((info["user"], info["query"], tuple(map(tuple, env.unwrapped._decisions))))
            done = False
            while not done:
                _, _, done, _, _ = env.step(policy(env, env.unwrapped._observation()))
        seen.append(sessions)
    assert seen[0] == seen[1]


# ------------------------------------------------------------ dynamics worked by hand
def test_a_page_on_shows_no_item_twice_and_reads_the_clicks():
    env = session_env(slate_size=1, max_pages=4, page_on_rate=1.0, rephrase_rate=0.0, **CLICK_ALWAYS_NEVER_BUY)
    observation, _ = env.reset(seed=0)
    shown, pages = [], []
    done = False
    while not done:
        slot = int(np.argmax(observation["mask"]))
        shown.append(env.catalog.item_ids[env.rows[slot]])
        observation, _, done, _, info = env.step(slot)
        assert info["click"], "every examined item is clicked"
        pages.append(info["page"])
        if not done:
            # the next page: page k of the query, the clicks so far, nothing shown again
            context = dict(zip(CONTEXT_FEATURES, observation["context"]))
            assert context["session_page"] == pytest.approx((info["page"]) / 4)
            assert context["session_clicks"] == pytest.approx(np.log1p(len(shown)) / np.log1p(10))
            assert not set(env.catalog.item_ids[row] for row in env.rows) & set(shown)
            clicked = env.catalog.text[[env.catalog.item_ids.index(item) for item in shown]]
            expected = (env.catalog.text[env.rows] @ clicked.T).max(axis=1)
            np.testing.assert_allclose(observation["features"][: len(env.rows), FEATURES.index("sim_to_clicked")], expected, atol=1e-3)
    assert pages == [1, 2, 3, 4] and sorted(shown) == ["A", "B", "C", "D"]
    assert info["page_event"] == "last_page" and info["pages"] == 4
    assert env.profiles[0].shown == 4  # the profile saw every page


def test_a_purchase_ends_the_session_and_leaving_ends_it_without_one():
    buy = session_env(max_pages=3, page_on_rate=1.0, rephrase_rate=0.0, click_threshold=-50.0, cart_threshold=-50.0, purchase_threshold=-50.0)
    infos = play(buy, lambda env, observation: int(np.argmax(observation["mask"])), seed=0)
    assert [info["page"] for info in infos] == [1, 1] and infos[-1]["page_event"] == "purchase" and infos[0]["purchase"]
    leave = session_env(max_pages=3, page_on_rate=0.0, rephrase_rate=0.0, **CLICK_ALWAYS_NEVER_BUY)
    infos = play(leave, lambda env, observation: int(np.argmax(observation["mask"])), seed=0)
    assert len(infos) == 2 and infos[-1]["page_event"] == "leave" and infos[-1]["pages"] == 1


def test_a_rephrase_moves_nearer_the_target_and_starts_its_page_one():
    env = session_env(rephrasing_catalog(), slate_size=1, max_pages=3, page_on_rate=0.0, rephrase_rate=1.0, **CLICK_ALWAYS_NEVER_BUY)
    env.reset(seed=0)
    assert env.session.query == 0 and env.nearer_phrases() == [1] and env.sub_intent_phrase() == 1
    shown = env.rows[0]
    observation, _, done, _, info = env.step(0)
    assert not done and info["page_event"] == "rephrase"
    assert env.session.query == 1 and env.session.brand == 0  # the stated brand binds the shopper now
    assert (env.state.page, env.state.rephrasings) == (1, 1)
    context = dict(zip(CONTEXT_FEATURES, observation["context"]))
    assert context["session_page"] == 0.0 and context["session_rephrasings"] == pytest.approx(1 / 3)
    # under the new query the item shown before may come back, marked as shown in the session
    shown_column = observation["features"][:, FEATURES.index("shown_in_session")]
    assert shown_column[list(env.rows).index(shown)] == 1.0 and shown_column.sum() == 1.0
    # nothing nearer than the nearest phrase: the shopper pages on instead
    observation, _, done, _, info = env.step(int(np.argmax(observation["mask"])))
    assert env.nearer_phrases() == [] and info["page_event"] == "page_on" and env.state.page == 2


def test_the_session_reward_matches_its_exact_expectation():
    """Two pages of two positions on the tiny shop: E = R(page 1) + P(no purchase on page 1) p_on R(page 2)."""
    env = session_env(max_pages=2, page_on_rate=0.4, rephrase_rate=0.0)
    env.reset(seed=0)
    ids = [env.catalog.item_ids[row] for row in env.rows]
    first, second = [ids.index("A"), ids.index("B")], [ids.index("C"), ids.index("D")]
    reward_one = env.expected_slate_reward(first)
    world, utilities = env.world, env.utilities
    discount_b = world.duplicate_factor(np.array([float(env.catalog.text[0] @ env.catalog.text[1])]))[0]
    buy_a = utilities.attraction[first[0]] * utilities.cart[first[0]] * utilities.purchase[first[0]]
    buy_b = utilities.attraction[first[1]] * discount_b * utilities.cart[first[1]] * discount_b * utilities.purchase[first[1]]
    bought = buy_a + utilities.patience * (1 - buy_a) * buy_b  # DBN: position 1 is read unless position 0 sold
    order = {1: ("A", "B"), 2: ("C", "D")}  # what each page shows, in order
    totals, page_two = [], None
    for session in range(6000):
        env.reset(seed=7 if session == 0 else None)
        total, done = 0.0, False
        while not done:
            page_ids = [env.catalog.item_ids[row] for row in env.rows]
            if env.pages_shown == 2 and page_two is None:
                page_two = env.expected_slate_reward([page_ids.index("C"), page_ids.index("D")])
            _, reward, done, _, _ = env.step(page_ids.index(order[env.pages_shown][len(env.slate.placed)]))
            total += reward
        totals.append(total)
    expected = reward_one + (1 - bought) * 0.4 * page_two
    mean, low, high = mean_ci95(np.array(totals))
    assert abs(mean - expected) < 1.6 * (high - low) / 2, (mean, expected)
    assert second  # page 2 holds the two items page 1 did not show


def test_the_page_discount_weighs_later_pages():
    plain = session_env(slate_size=1, max_pages=2, page_on_rate=1.0, rephrase_rate=0.0, **CLICK_ALWAYS_NEVER_BUY)
    halved = session_env(slate_size=1, max_pages=2, page_on_rate=1.0, rephrase_rate=0.0, page_discount=0.5, **CLICK_ALWAYS_NEVER_BUY)
    first = [info["reward"] for info in play(plain, lambda env, o: int(np.argmax(o["mask"])), seed=1)]
    second = [info["reward"] for info in play(halved, lambda env, o: int(np.argmax(o["mask"])), seed=1)]
    assert first[0] == second[0] == pytest.approx(0.1) and second[1] == pytest.approx(0.5 * first[1])


def test_after_page_decisions_follow_the_configured_rates(sim_catalog):
    """No purchase possible: after page 1 the shopper pages on, rephrases (or pages on when nothing is nearer) or
    leaves at the configured rates."""
    env = gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog, purchase_threshold=50.0, history_sessions_per_user=0.0)
    events = []
    for session in range(1500):
        env.reset(seed=2 if session == 0 else None)
        done = False
        while not done:
            _, _, done, _, info = env.step(int(np.argmax(env.unwrapped.action_masks())))
        events.append(env.unwrapped.page_events[0])
    events = np.array(events)
    went_on = np.isin(events, ["page_on", "rephrase"]).mean()
    assert abs(went_on - 0.40) < 3 * np.sqrt(0.4 * 0.6 / len(events)), went_on
    assert 0 < (events == "rephrase").mean() <= 0.15 + 3 * np.sqrt(0.15 * 0.85 / len(events))


def test_bad_session_settings_name_the_parameter(sim_catalog):
    for kwargs, parameter in (
        ({"page_on_rate": 1.2}, "page_on_rate"),
        ({"max_pages": 0}, "max_pages"),
        ({"page_on_rate": 0.7, "rephrase_rate": 0.5}, "rephrase_rate"),
    ):
        with pytest.raises(envs.ConfigError) as caught:
            gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog, **kwargs)
        assert caught.value.parameter == parameter and parameter in str(caught.value)


def test_history_gives_returning_users_profiles(sim_catalog):
    without = gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog, history_sessions_per_user=0.0).unwrapped
    with_history = gym.make("envs/SessionShoppingSmall-v0", catalog=sim_catalog).unwrapped
    shares = []
    for env in (without, with_history):
        has_profile = []
        for session in range(200):
            observation, _ = env.reset(seed=4 if session == 0 else None)
            has_profile.append(observation["context"][CONTEXT_FEATURES.index("user_has_profile")])
            done = False
            while not done:
                observation, _, done, _, _ = env.step(int(np.argmax(observation["mask"])))
        shares.append(np.mean(has_profile))
    assert shares[0] < 0.3 < 0.6 < shares[1], shares
    # the history does not change who shops: the same sessions in both worlds
    assert dataclasses.astuple(without.session) == dataclasses.astuple(with_history.session)
