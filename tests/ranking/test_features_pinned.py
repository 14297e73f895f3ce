"""Pinned feature rows: what :meth:`FeatureBuilder.build` returns for fixed inputs, to the bit.

The builder is optimised for the simulator's speed (issue 28); these rows were computed by the plain version
before that, so an optimisation that changes any value (a median, a rounding, an order of operations) fails here.
The inputs touch every feature: several categories (odd and even counts, for the group medians), a missing picture
score, a free item, a cold item, a price level that is not finite, a profile with interactions and impressions, a
session with clicks and items shown, and a query intent with a price, a brand and a colour.
"""

from __future__ import annotations

import numpy as np

from ranker.ranking.features import CandidateSet, FeatureBuilder, QueryIntent, SessionState, UserProfile


def pinned_inputs() -> tuple[CandidateSet, np.ndarray, UserProfile, SessionState, QueryIntent]:
    """Candidates, counters, a profile, a session and an intent, all fixed."""
    rng = np.random.default_rng(2026)
    n, d = 9, 8
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    image = rng.uniform(0.1, 0.9, n)
    image[[2, 6]] = np.nan
    candidates = CandidateSet(
        item_ids=[f"i{index}" for index in range(n)],
        categories=["Mugs", "Lamps", "Mugs", "Rugs", "Lamps", "Mugs", "Rugs", "Mugs", "Lamps"],
        brands=["Acme", "Bolt", "Acme", "Core", "Bolt", "Dune", "Core", "Acme", "Edge"],
        prices=np.array([12.5, 40.0, 9.99, 120.0, 35.0, 15.0, 80.0, 11.0, 0.0]),
        has_image=~np.isnan(image),
        text_vectors=vectors,
        retrieval_scores=np.sort(rng.uniform(0.2, 0.9, n))[::-1].copy(),
        channel_scores={"text": rng.uniform(0.2, 0.9, n), "image": image, "text_to_image": rng.uniform(0.0, 0.5, n), "image_to_text": rng.uniform(0.0, 0.5, n)},
        colours=["red", "", "blue", "red", "green", "red", "", "blue", "red"],
        price_levels=np.array([0.1, -0.3, -0.2, 0.5, np.nan, 0.3, 0.0, -0.1, -4.0]),
    )
    counts = np.stack([rng.poisson(50, n), rng.poisson(5, n), rng.poisson(1, n), rng.uniform(5, 20, n)], axis=1).astype(np.float64)
    counts[4] = 0.0  # a cold item
    profile = UserProfile()
    for index in (0, 2, 5, 7, 3):
        profile.record(
            kind="click",
            category=candidates.categories[index],
            brand=candidates.brands[index],
            price=float(candidates.prices[index]),
            text_vector=vectors[index],
            colour=candidates.colours[index],
            level=float(candidates.price_levels[index]),
        )
    profile.record(kind="purchase", category="Mugs", brand="Acme", price=12.5, text_vector=vectors[0], colour="red", level=0.1)
    profile.record_shown(candidates.brands, candidates.colours, [0.1, -0.3, -0.2, 0.5, 0.0, 0.3, 0.0, -0.1, -4.0])
    session = SessionState(page=2, rephrasings=1, clicked=vectors[[1, 3]].copy(), shown=frozenset({"i2", "i5"}))
    intent = QueryIntent(price_max=50.0, brands=("acme",), colours=("Red",))
    return candidates, counts, profile, session, intent


PINNED_ROWS = {
    0: [
        0.66162109375,
        0.857421875,
        0.383056640625,
        0.859375,
        0.0,
        1.0,
        0.041961669921875,
        0.0,
        0.06390380859375,
        0.22900390625,
        0.10076904296875,
        0.9619140625,
        0.9921875,
        0.83349609375,
        0.66650390625,
        -1.38671875,
        1.0,
        1.0,
        0.96484375,
        0.765625,
        -0.01666259765625,
        0.359130859375,
        0.0,
    ],
    2: [
        0.84228515625,
        0.0,
        0.303466796875,
        0.8232421875,
        0.25,
        0.0,
        -0.0435791015625,
        -0.22412109375,
        -0.1602783203125,
        0.2802734375,
        0.0080108642578125,
        0.99072265625,
        -0.292724609375,
        0.83349609375,
        0.66650390625,
        -1.6103515625,
        1.0,
        0.0,
        0.96484375,
        0.60595703125,
        -0.316650390625,
        -0.04248046875,
        1.0,
    ],
    3: [
        0.36328125,
        0.3251953125,
        0.428466796875,
        0.75146484375,
        0.375,
        1.0,
        0.90478515625,
        2.26171875,
        0.2027587890625,
        0.213623046875,
        0.093994140625,
        0.9716796875,
        0.416259765625,
        0.1666259765625,
        0.1666259765625,
        0.87548828125,
        0.0,
        1.0,
        0.04083251953125,
        0.765625,
        0.38330078125,
        1.0,
        0.0,
    ],
    4: [
        0.61962890625,
        0.6376953125,
        0.314208984375,
        0.6474609375,
        0.5,
        1.0,
        0.434814453125,
        1.029296875,
        0.0,
        0.09600830078125,
        0.019195556640625,
        0.0,
        0.40576171875,
        0.0,
        0.0,
        -0.356689453125,
        0.0,
        0.0,
        -1.38671875,
        -1.38671875,
        -0.11663818359375,
        0.7421875,
        0.0,
    ],
    8: [
        0.48193359375,
        0.58349609375,
        0.440673828125,
        0.331787109375,
        1.0,
        1.0,
        -2.6796875,
        -7.1328125,
        -8.1640625,
        0.2529296875,
        0.0927734375,
        0.91650390625,
        0.37255859375,
        0.0,
        0.0,
        -8.515625,
        0.0,
        1.0,
        -1.38671875,
        0.765625,
        -4.1171875,
        0.556640625,
        0.0,
    ],
}
PINNED_CONTEXT = [
    1.0,
    0.0,
    0.42163798213005066,
    1.0,
    0.6684459447860718,
    0.75,
    1.0,
    1.0,
    1.0,
    0.25,
    0.3333333432674408,
    0.45815691351890564,
    0.5277777910232544,
]
ANONYMOUS_ROW_1 = [
    0.58203125,
    0.118896484375,
    0.1400146484375,
    0.8427734375,
    0.125,
    1.0,
    0.48583984375,
    0.0,
    0.133544921875,
    0.306884765625,
    0.1402587890625,
    0.95654296875,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
]
ANONYMOUS_CONTEXT = [1.0, 1.0, 0.0, 0.0, 0.6684459447860718, 0.75, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_rows_match_the_pinned_values_bit_for_bit():
    candidates, counts, profile, session, intent = pinned_inputs()
    observation = FeatureBuilder(12, 4).build(
        candidates, counts=counts, profile=profile, query_has_text=True, query_has_image=False, intent=intent, session=session
    )
    for row, expected in PINNED_ROWS.items():
        np.testing.assert_array_equal(observation.static[row], np.array(expected, dtype=np.float32), err_msg=f"row {row}")
    np.testing.assert_array_equal(observation.context, np.array(PINNED_CONTEXT, dtype=np.float32))
    assert not observation.static[9:].any()  # padding


def test_an_anonymous_request_matches_the_pinned_values():
    candidates, counts, _profile, _session, _intent = pinned_inputs()
    observation = FeatureBuilder(12, 4).build(candidates, counts=counts, profile=UserProfile(), query_has_text=True, query_has_image=True)
    np.testing.assert_array_equal(observation.static[1], np.array(ANONYMOUS_ROW_1, dtype=np.float32))
    np.testing.assert_array_equal(observation.context, np.array(ANONYMOUS_CONTEXT, dtype=np.float32))
