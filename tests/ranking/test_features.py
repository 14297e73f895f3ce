"""The feature builder: hand-computed values, padding, slate updates and the schema hash."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.ranking.features import (
    CONTEXT_FEATURES,
    FEATURES,
    STATIC_FEATURES,
    CandidateSet,
    FeatureBuilder,
    FeatureError,
    InMemoryStateProvider,
    SlateFeatures,
    feature_schema,
    schema_hash,
)


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture()
def candidates() -> CandidateSet:
    return CandidateSet(
        item_ids=["a", "b", "c"],
        categories=["Mugs", "Mugs", "Lamps"],
        brands=["Acme", "Bolt", "Acme"],
        prices=np.array([10.0, 20.0, 40.0]),
        has_image=np.array([True, False, True]),
        text_vectors=np.stack([unit(1, 0, 0), unit(1, 1, 0), unit(0, 0, 1)]),
        retrieval_scores=np.array([0.9, 0.6, 0.3]),
        channel_scores={"text": np.array([0.9, 0.6, 0.3]), "text_to_image": np.array([0.2, np.nan, 0.4])},
    )


def column(matrix: np.ndarray, name: str) -> np.ndarray:
    return matrix[:, FEATURES.index(name)]


# static features and similarities are rounded to float16 where they are made (ranker.ranking.features.snapshot_precision)
HALF = dict(rtol=2.0**-11, atol=1e-7)


def test_static_features_match_hand_computed_values(candidates):
    state = InMemoryStateProvider()
    for _ in range(40):  # a shown first, b second: b is seen less, its impressions count half the exposure
        state.record_impressions(["a", "b"])
    state.record_interaction("u1", item_id="a", kind="click", category="Mugs", brand="Acme", price=10.0, text_vector=unit(1, 0, 0))
    state.record_interaction("u1", item_id="a", kind="purchase", category="Mugs", brand="Acme", price=10.0, text_vector=unit(1, 0, 0))
    builder = FeatureBuilder(n_candidates=5, slate_size=3, prior_ctr=0.05, prior_purchase_rate=0.01, prior_strength=20)
    observation = builder.build(
        candidates, counts=state.item_counts(candidates.item_ids), profile=state.user_profile("u1"), query_has_text=True, query_has_image=False
    )
    features = SlateFeatures(observation, 3).features
    assert features.shape == (5, len(FEATURES))
    np.testing.assert_allclose(column(features, "sim_text")[:3], [0.9, 0.6, 0.3], **HALF)
    np.testing.assert_allclose(column(features, "sim_cross")[:3], [0.2, 0.0, 0.4], **HALF)
    np.testing.assert_allclose(column(features, "retrieval_rank")[:3], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(state.item_counts(["a", "b"]), [[40, 1, 1, 40], [40, 0, 0, 20]])  # impressions, clicks, purchases, exposure
    prior_exposure = 20 * (1 + 1 / 2 + 1 / 3) / 3  # prior_strength x the mean examination prior over 3 positions
    np.testing.assert_allclose(column(features, "ctr")[:3], [(1 + 1) / (40 + prior_exposure), 1 / (20 + prior_exposure), 1 / prior_exposure], **HALF)
    np.testing.assert_allclose(
        column(features, "purchase_rate")[:3], [(1 + 0.2) / (40 + prior_exposure), 0.2 / (20 + prior_exposure), 0.2 / prior_exposure], **HALF
    )
    np.testing.assert_allclose(column(features, "price_vs_category")[:3], [-np.log(2) / 2, np.log(2) / 2, 0.0], **HALF)  # Mugs 10 and 20; one lamp
    log_price = np.log([10.0, 20.0, 40.0])
    np.testing.assert_allclose(column(features, "price_z")[:3], (log_price - log_price.mean()) / log_price.std(), **HALF)
    np.testing.assert_allclose(column(features, "price_vs_user")[:3], log_price - np.log(10.0), **HALF)
    np.testing.assert_allclose(column(features, "user_affinity")[:3], [1.0, unit(1, 1, 0)[0], 0.0], **HALF)
    np.testing.assert_allclose(column(features, "user_category_affinity")[:3], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(column(features, "user_brand_affinity")[:3], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(features[3:], 0.0)  # padding rows
    np.testing.assert_array_equal(observation.static, observation.static.astype(np.float16))  # what the event log stores, exactly
    np.testing.assert_array_equal(observation.similarity_to(0), observation.similarity_to(0).astype(np.float16))
    np.testing.assert_array_equal(observation.valid, [True, True, True, False, False])
    context = dict(zip(CONTEXT_FEATURES, observation.context))
    assert context["query_has_text"] == 1.0 and context["query_has_image"] == 0.0
    assert context["candidate_fill"] == pytest.approx(0.6) and context["user_has_profile"] == 1.0


def test_unknown_user_has_neutral_features(candidates):
    builder = FeatureBuilder(3, 2)
    observation = builder.build(
        candidates, counts=np.zeros((3, 4)), profile=InMemoryStateProvider().user_profile("nobody"), query_has_text=True, query_has_image=True
    )
    for name in ("user_affinity", "user_category_affinity", "user_brand_affinity", "price_vs_user", "log_popularity"):
        np.testing.assert_array_equal(observation.static[:, STATIC_FEATURES.index(name)], 0.0)
    np.testing.assert_allclose(observation.static[:, STATIC_FEATURES.index("ctr")], 0.05 / ((1 + 1 / 2) / 2), **HALF)  # the prior, per exposure


def test_slate_features_follow_placements(candidates):
    observation = FeatureBuilder(4, 3).build(
        candidates, counts=np.zeros((3, 4)), profile=InMemoryStateProvider().user_profile(None), query_has_text=True, query_has_image=False
    )
    slate = SlateFeatures(observation, 3)
    np.testing.assert_array_equal(column(slate.features, "position"), 0.0)
    slate.place(0)
    np.testing.assert_allclose(column(slate.features, "max_sim_to_placed")[:3], [1.0, unit(1, 1, 0)[0], 0.0], **HALF)
    np.testing.assert_allclose(column(slate.features, "same_category_placed")[:3], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(column(slate.features, "position"), 1 / 3)
    slate.place(2)
    np.testing.assert_allclose(column(slate.features, "same_category_placed")[:3], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(slate.available, [False, True, False, False])
    with pytest.raises(FeatureError, match="candidate 2 is not available"):
        slate.place(2)
    with pytest.raises(FeatureError, match="candidate 3 is not available"):
        slate.place(3)  # an empty slot


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_candidates": 0, "slate_size": 1}, "n_candidates"),
        ({"n_candidates": 5, "slate_size": 6}, "slate_size"),
        ({"n_candidates": 5, "slate_size": 2, "prior_ctr": 1.5}, "prior_ctr"),
        ({"n_candidates": 5, "slate_size": 2, "prior_strength": 0}, "prior_strength"),
    ],
)
def test_bad_builder_arguments_name_the_parameter(kwargs, message):
    with pytest.raises(FeatureError, match=message):
        FeatureBuilder(**kwargs)


def test_too_many_candidates_and_unknown_interaction(candidates):
    with pytest.raises(FeatureError, match="candidates: 3 given for 2 slots"):
        FeatureBuilder(2, 1).build(
            candidates, counts=np.zeros((3, 4)), profile=InMemoryStateProvider().user_profile(None), query_has_text=True, query_has_image=False
        )
    with pytest.raises(FeatureError, match="'like'"):
        InMemoryStateProvider().record_interaction("u", item_id="a", kind="like", category="c", brand="b", price=1.0, text_vector=unit(1, 0))


def test_schema_hash_is_stable_and_documented():
    schema = feature_schema()
    assert schema["hash"] == schema_hash() and len(schema_hash()) == 16
    assert schema["features"] == list(FEATURES) and len(set(FEATURES)) == len(FEATURES)


def test_intent_features_read_the_asked_range_brand_and_colour(candidates):
    """Schema 3: the price's log distance to the asked range, brand and colour matches, and the context flags."""
    from ranker.ranking.features import QueryIntent

    candidates.colours = ["Red", "blue", ""]
    builder = FeatureBuilder(n_candidates=4, slate_size=2)
    plain = builder.build(candidates, counts=np.zeros((3, 4)), profile=InMemoryStateProvider().user_profile(None), query_has_text=True, query_has_image=False)
    intent = QueryIntent(price_max=20.0, brands=("acme",), colours=("red",))
    asked = builder.build(
        candidates, counts=np.zeros((3, 4)), profile=InMemoryStateProvider().user_profile(None), query_has_text=True, query_has_image=False, intent=intent
    )
    for name in ("price_vs_limit", "brand_match", "colour_match"):
        np.testing.assert_array_equal(plain.static[:, STATIC_FEATURES.index(name)], 0.0)
    np.testing.assert_allclose(asked.static[:3, STATIC_FEATURES.index("price_vs_limit")], np.log([10 / 20, 1.0, 40 / 20]), **HALF)
    np.testing.assert_array_equal(asked.static[:3, STATIC_FEATURES.index("brand_match")], [1, 0, 1])
    np.testing.assert_array_equal(asked.static[:3, STATIC_FEATURES.index("colour_match")], [1, 0, 0])
    flags = [CONTEXT_FEATURES.index(name) for name in ("query_price_limit", "query_brand", "query_colour")]
    np.testing.assert_array_equal(plain.context[flags], 0.0)
    np.testing.assert_array_equal(asked.context[flags], 1.0)
    # a range with both bounds: the distance to the nearest one, positive outside it
    both = QueryIntent(price_min=15.0, price_max=30.0)
    np.testing.assert_allclose(both.price_distance(np.log([10.0, 20.0, 40.0])), [np.log(15 / 10), max(np.log(20 / 30), np.log(15 / 20)), np.log(40 / 30)])
