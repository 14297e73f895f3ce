"""Explanations: exact group Shapley values that add up to the placement-state score, and reasons true of the item."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
import torch

from ranker.live.registry import STARTING_POLICY
from ranker.ranking.explain import FALLBACK_REASON, GROUPS, METHOD, OTHER, Facts, explain_slate, feature_groups, group_shapley, reasons_for
from ranker.ranking.features import CONTEXT_FEATURES, FEATURES, CandidateSet, FeatureBuilder, SlateFeatures, UserProfile
from ranker.ranking.network import SlateNet
from ranker.ranking.policy import RankingPolicy

K, SLATE = 30, 8
COLUMN = {name: index for index, name in enumerate(FEATURES)}


@pytest.fixture(scope="module")
def starting() -> RankingPolicy:
    return RankingPolicy.load(STARTING_POLICY)


def random_net(seed: int, n_features: int = len(FEATURES), n_context: int = len(CONTEXT_FEATURES), hidden: int = 32) -> RankingPolicy:
    """A net with real spread in its scores and fitted standardisation (one column constant: infinite scale)."""
    torch.manual_seed(seed)
    net = SlateNet(n_features, n_context, hidden)
    with torch.no_grad():
        net.score.weight.normal_(0, 1.0)
    rng = np.random.default_rng(seed)
    rows = rng.normal(0.3, 1.5, (300, n_features))
    rows[:, 0] = 0.25  # constant in "training": read as 0 whatever its value
    net.feature_inputs.fit(rows)
    net.context_inputs.fit(rng.normal(0.5, 0.5, (300, n_context)))
    return RankingPolicy(net)


def observation(seed: int, n: int = K, profile: bool = True):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    candidates = CandidateSet(
        item_ids=[f"i{i}" for i in range(n)],
        categories=[f"c{i % 4}" for i in range(n)],
        brands=[f"b{i % 5}" for i in range(n)],
        prices=rng.uniform(5, 200, n),
        has_image=rng.random(n) < 0.6,
        text_vectors=vectors,
        retrieval_scores=np.sort(rng.random(n))[::-1],
        channel_scores={"text": rng.random(n)},
    )
    user = UserProfile()
    if profile:
        for i, kind in enumerate(("click", "add_to_cart", "purchase", "click")):
            user.record(kind=kind, category=f"c{i % 4}", brand=f"b{i}", price=40.0 + 10 * i, text_vector=vectors[i])
    counts = np.column_stack([rng.integers(0, 200, n), rng.integers(0, 20, n), rng.integers(0, 5, n), rng.uniform(0, 60, n)]).astype(float)
    return FeatureBuilder(K, SLATE).build(candidates, counts=counts, profile=user, query_has_text=True, query_has_image=False)


def placement_scores(policy: RankingPolicy, obs, slots) -> list[float]:
    """The policy's score of each placed item at its placement, through the serving path (RankingPolicy.scores)."""
    slate, out = SlateFeatures(obs, SLATE), []
    for slot in slots:
        out.append(float(policy.scores(slate.features, obs.context, slate.available.astype(np.float32))[slot]))
        slate.place(slot)
    return out


def test_every_feature_is_in_a_named_group_once():
    groups = feature_groups()
    assert OTHER not in groups, "features in no group: " + ", ".join(FEATURES[i] for i in groups.get(OTHER, []))
    columns = np.concatenate(list(groups.values()))
    assert sorted(columns.tolist()) == list(range(len(FEATURES)))
    assert set(groups) <= set(GROUPS) and len(GROUPS) <= 14
    assert "intent_match" in GROUPS and set(GROUPS["intent_match"]) == {"price_vs_limit", "brand_match", "colour_match"}
    assert feature_groups(("sim_text", "unheard_of"))["other"].tolist() == [1]  # a new feature is never dropped


@pytest.mark.parametrize("temperature", [None, 1.0])
def test_contributions_add_up_to_the_placement_score_of_the_starting_policy(starting, temperature):
    rng = np.random.default_rng(5)
    for seed in range(3):
        obs = observation(seed, n=K - seed)  # empty slots too
        ranking = starting.rank(obs, SLATE, temperature=temperature, rng=rng)
        explained = explain_slate(starting, obs, ranking.slots, SLATE)
        assert len(explained) == SLATE
        for why, served in zip(explained, placement_scores(starting, obs, ranking.slots)):
            assert why.baseline + sum(why.contributions.values()) == pytest.approx(why.score, abs=1e-4)
            assert why.score == pytest.approx(served, abs=1e-4)
            assert len(why.reasons) <= 2 and why.to_json()["method"] == METHOD
        if temperature is None:  # greedy: the first item's placement state is the one its served score came from
            assert explained[0].score == pytest.approx(float(ranking.scores[ranking.slots[0]]), abs=1e-4)
        assert np.std([sum(why.contributions.values()) for why in explained]) > 0


def test_random_nets_add_up_too():
    for seed in range(3):
        policy, obs = random_net(seed), observation(10 + seed, profile=seed != 1)
        slots = policy.rank(obs, SLATE).slots
        for why, served in zip(explain_slate(policy, obs, slots, SLATE), placement_scores(policy, obs, slots)):
            assert why.baseline + sum(why.contributions.values()) == pytest.approx(why.score, abs=1e-4)
            assert why.score == pytest.approx(served, abs=1e-4)
            assert why.contributions.get("text_match", 0.0) != 0.0


def test_a_linear_scorer_gets_weight_times_deviation_from_the_mean():
    """Biases large enough that no ReLU is ever off: the score is linear in the row, and a group's Shapley value is
    sum over its columns of weight * (x - mean) / scale, in closed form."""
    policy = random_net(3, n_features=5, n_context=2, hidden=6)
    with torch.no_grad():
        policy.net.encoder[0].bias.fill_(500.0)
        policy.net.encoder[2].weight.abs_()
        policy.net.encoder[2].bias.fill_(500.0)
    policy = RankingPolicy(policy.net)
    weights = policy.numpy_weights()
    (mean, inverse), _, (w1, _), (w2, _), (w3, _) = weights
    effective = (w1[:5] @ w2 @ w3)[:, 0]  # d score / d standardised own feature
    rng = np.random.default_rng(0)
    rows = rng.normal(0.3, 1.5, (4, 5)).astype(np.float32)
    summaries = rng.normal(0, 1, (4, 5)).astype(np.float32)
    groups = [np.array([0, 1]), np.array([2]), np.array([3, 4])]
    scores, baselines, contributions = group_shapley(weights, rows, summaries, np.zeros(2, np.float32), groups)
    deviation = (rows - mean) * inverse
    assert np.all(deviation[:, 0] == 0)  # the constant column reads 0
    expected = np.column_stack([(effective[g] * deviation[:, g]).sum(axis=1) for g in groups])
    np.testing.assert_allclose(contributions, expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(baselines + contributions.sum(axis=1), scores, atol=1e-6)


def test_exact_against_the_permutation_definition_on_a_relu_net():
    """Shapley values as the mean marginal contribution over all orderings of the groups, with a plain forward pass."""
    policy = random_net(4, n_features=6, n_context=1, hidden=5)
    weights = policy.numpy_weights()
    (mean, inverse), (c_mean, c_inverse), (w1, b1), (w2, b2), (w3, b3) = weights
    rng = np.random.default_rng(1)
    row = rng.normal(0.3, 2.0, 6).astype(np.float32)
    summary = rng.normal(0, 1, 6).astype(np.float32)
    context = rng.normal(0.5, 1, 1).astype(np.float32)
    groups = [np.array([0, 5]), np.array([1]), np.array([2, 3]), np.array([4])]

    def value(members: set[int]) -> float:
        z = np.zeros(6, np.float32)
        for g in members:
            z[groups[g]] = np.clip((row[groups[g]] - mean[groups[g]]) * inverse[groups[g]], -10, 10)
        x = np.concatenate([z, summary, (context - c_mean) * c_inverse])
        return float((np.maximum(np.maximum(x @ w1 + b1, 0) @ w2 + b2, 0) @ w3 + b3)[0])

    expected = np.zeros(4)
    orders = list(permutations(range(4)))
    for order in orders:
        for i, g in enumerate(order):
            expected[g] += value(set(order[: i + 1])) - value(set(order[:i]))
    expected /= len(orders)
    scores, baselines, contributions = group_shapley(weights, row[None], summary[None], context, groups)
    np.testing.assert_allclose(contributions[0], expected, atol=1e-4)
    assert scores[0] == pytest.approx(value({0, 1, 2, 3}), abs=1e-4) and baselines[0] == pytest.approx(value(set()), abs=1e-4)
    assert np.abs(expected).min() > 1e-3  # every group mattered: the check is not vacuous


def facts(values: dict[str, float], peers: dict[str, list[float]] | None = None, z: dict[str, float] | None = None, context: dict[str, float] | None = None):
    row = np.zeros(len(FEATURES), np.float32)
    for name, value in values.items():
        row[COLUMN[name]] = value
    deviation = np.zeros(len(FEATURES), np.float32)
    for name, value in (z or {}).items():
        deviation[COLUMN[name]] = value
    n = max((len(v) for v in (peers or {}).values()), default=0)
    others = np.repeat(row[None], n, axis=0)
    for name, column in (peers or {}).items():
        others[:, COLUMN[name]] = column
    ctx = np.zeros(len(CONTEXT_FEATURES), np.float32)
    for name, value in (context or {}).items():
        ctx[CONTEXT_FEATURES.index(name)] = value
    return Facts(row, deviation, others, ctx)


def test_a_phrase_is_said_only_when_true_of_the_item():
    price_first = {"price": 5.0, "click_rate": 1.0, "diversity": 0.5, "position": 0.2, "brand_affinity": 0.1}
    expensive = facts({"price_z": 0.8}, peers={"price_z": [-1.0, -0.5, 0.2, 1.5]}, z={"price_z": 0.8})
    assert "cheaper than most results" not in reasons_for(price_first, expensive)
    assert reasons_for(price_first, expensive)[0] == "a premium pick, pricier than most results"
    cheap = facts({"price_z": -0.8}, peers={"price_z": [-1.0, -0.5, 0.2, 1.5]}, z={"price_z": -0.8})
    assert reasons_for(price_first, cheap)[0] == "cheaper than most results"
    # the click rate must beat most of the other results and the training mean; at position 0 nothing is "above"
    top = facts({"ctr": 0.02, "position": 0.0}, peers={"ctr": [0.05, 0.06, 0.01]}, z={"ctr": 0.5})
    assert reasons_for({"click_rate": 3.0, "diversity": 2.0, "position": 1.0}, top) == ["shown near the top"]
    lower = facts({"max_sim_to_placed": 0.1, "position": 0.5, "user_brand_affinity": 0.25}, z={"max_sim_to_placed": -1.0})
    assert reasons_for({"diversity": 2.0, "brand_affinity": 1.0, "position": 0.5}, lower) == ["unlike the items above", "you like this brand"]
    # negative contributions never give reasons, whatever is true
    assert reasons_for({"brand_affinity": -1.0, "price": -0.1}, facts({"user_brand_affinity": 0.5, "price_vs_user": -1.0})) == [FALLBACK_REASON]
    if "colour_match" in COLUMN:  # the intent features (schema 3)
        intent = facts({"colour_match": 1.0, "price_vs_limit": -0.3}, z={"colour_match": 2.0, "price_vs_limit": -0.5}, context={"query_price_limit": 1.0})
        assert reasons_for({"intent_match": 1.0}, intent) == ["matches the colour you asked for"]
        assert reasons_for({"intent_match": 1.0}, facts({"price_vs_limit": 0.4}, context={"query_price_limit": 1.0})) == [FALLBACK_REASON]  # over the limit


CHECKS = {  # phrase -> what must hold of the item's raw row, its peers in the same state
    "cheaper than most results": lambda row, peers: (peers[:, COLUMN["price_z"]] > row[COLUMN["price_z"]]).mean() > 0.5,
    "a premium pick, pricier than most results": lambda row, peers: (peers[:, COLUMN["price_z"]] < row[COLUMN["price_z"]]).mean() > 0.5,
    "cheaper than what you usually buy": lambda row, peers: row[COLUMN["price_vs_user"]] < 0,
    "cheaper than most of its kind here": lambda row, peers: row[COLUMN["price_vs_category"]] < 0,
    "often clicked by other shoppers": lambda row, peers: (peers[:, COLUMN["ctr"]] < row[COLUMN["ctr"]]).mean() > 0.5,
    "often bought": lambda row, peers: (peers[:, COLUMN["purchase_rate"]] < row[COLUMN["purchase_rate"]]).mean() > 0.5,
    "you like this brand": lambda row, peers: row[COLUMN["user_brand_affinity"]] > 0,
    "unlike the items above": lambda row, peers: row[COLUMN["position"]] > 0,
    "a different kind from the items above": lambda row, peers: row[COLUMN["position"]] > 0 and row[COLUMN["same_category_placed"]] == 0,
    "shown near the top": lambda row, peers: row[COLUMN["position"]] <= 0.2,
    "matches your search words": lambda row, peers: row[COLUMN["sim_text"]] > np.median(peers[:, COLUMN["sim_text"]]),
    "popular": lambda row, peers: (peers[:, COLUMN["log_popularity"]] < row[COLUMN["log_popularity"]]).mean() > 0.5,
    "from a category you shop": lambda row, peers: row[COLUMN["user_category_affinity"]] > 0,
    "close to what you viewed before": lambda row, peers: row[COLUMN["user_affinity"]] > 0,
    "has a photo": lambda row, peers: row[COLUMN["has_image"]] == 1,
    "one of the closest matches to your search": lambda row, peers: row[COLUMN["retrieval_rank"]] <= 0.1,
    "a close match to your search": lambda row, peers: (peers[:, COLUMN["retrieval_score"]] < row[COLUMN["retrieval_score"]]).mean() > 0.5,
    "its photo matches your search": lambda row, peers: row[COLUMN["sim_cross"]] > 0,
    "matches the colour you asked for": lambda row, peers: row[COLUMN["colour_match"]] == 1,
    "matches the brand you asked for": lambda row, peers: row[COLUMN["brand_match"]] == 1,
    "within the price you asked for": lambda row, peers: row[COLUMN["price_vs_limit"]] < 0,
    FALLBACK_REASON: lambda row, peers: True,  # every served item was retrieved for the query
}


def test_served_reasons_are_true_of_their_items(starting):
    said = set()
    for seed in range(6):
        policy = starting if seed % 2 else random_net(seed)
        obs = observation(20 + seed, profile=seed % 3 != 0)
        slots = policy.rank(obs, SLATE, temperature=2.0, rng=np.random.default_rng(seed)).slots
        slate = SlateFeatures(obs, SLATE)
        for slot, why in zip(slots, explain_slate(policy, obs, slots, SLATE)):
            row, peers = slate.features[slot].copy(), slate.features[obs.valid & (np.arange(K) != slot)]
            for reason in why.reasons:
                assert CHECKS[reason](row, peers), (reason, dict(zip(FEATURES, row.round(3))))
            positive = sorted((value for value in why.contributions.values() if value > 0), reverse=True)
            assert 1 <= len(why.reasons) <= max(1, min(2, len(positive)))
            assert FALLBACK_REASON not in why.reasons or why.reasons == [FALLBACK_REASON]
            said.update(why.reasons)
            slate.place(slot)
    assert len(said) >= 5, said  # the check covered several kinds of reason
