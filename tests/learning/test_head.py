"""The Bayesian head: its prior serves the network exactly, its update is closed form, deterministic and learns a
known model, scale-free sampling, and bad rows or singular updates never take the head down."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from tinyshop import F, K, L, bad_policy, best_value, log_rankings, requests, true_value

from ranker.learning.head import HeadRows, HeadSettings, fresh_head, head_rows, update_head
from ranker.ranking.features import Observation, SlateFeatures
from ranker.ranking.head import BayesianHead, HeadError
from ranker.ranking.policy import RankingPolicy, normalised_scores

SETTINGS = HeadSettings(half_life_s=0.0, min_rows=200, min_rows_per_position=50.0, prior_rows=(5.0, 50.0, 5.0), device="cpu")


def synthetic_rows(n: int, theta: np.ndarray, examination: np.ndarray, seed: int, noise: float = 0.05) -> HeadRows:
    """Rows whose reward is ``e_t theta . phi`` plus noise: the head's own model, with known parameters."""
    rng = np.random.default_rng(seed)
    d = len(theta)
    phi = np.c_[rng.normal(size=(n, d - 1)), np.ones(n)]
    position = rng.integers(0, len(examination), n)
    reward = examination[position] * (phi @ theta) + noise * rng.normal(size=n)
    return HeadRows(phi=phi, reward=reward, position=position, weight=np.ones(n))


def test_the_update_recovers_a_known_linear_model_and_examination_curve():
    head = BayesianHead.fresh(2, prior_precision=SETTINGS.prior_rows)  # score_z, two features and their hinges, bias
    theta = np.random.default_rng(0).normal(scale=0.1, size=head.dim)
    theta[0] = 0.3
    curve = np.array([1.0, 0.6, 0.35])
    for batch in range(10):
        head = update_head(head, synthetic_rows(2000, theta, curve, seed=batch), newest_ts=float(batch), settings=SETTINGS)
    assert head.calibrated and head.active
    np.testing.assert_allclose(head.mean, theta, atol=0.02)
    np.testing.assert_allclose(head.examination[:3], curve, atol=0.03)
    assert head.noise_var == pytest.approx(0.05**2, rel=0.3)
    # the draws spread as the posterior says: C C^T is sigma^2 P^-1, small after 20,000 rows
    draws = np.stack([head.draw(np.random.default_rng(seed)) for seed in range(400)])
    assert np.abs(draws.mean(axis=0) - head.mean).max() < 0.01 and 0 < draws.std(axis=0).max() < 0.01


def test_the_update_is_deterministic_given_head_and_batch():
    head = BayesianHead.fresh(2, prior_precision=SETTINGS.prior_rows)
    theta, curve = np.linspace(0.3, -0.1, head.dim), np.array([1.0, 0.5])
    rows = synthetic_rows(500, theta, curve, seed=1)
    first = update_head(head, rows, newest_ts=10.0, settings=SETTINGS)
    again = update_head(copy.deepcopy(head), copy.deepcopy(rows), newest_ts=10.0, settings=SETTINGS)
    for name in ("mean", "draw_factor", "examination", "stats_a", "stats_b", "prior_mean"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))


def test_forgetting_halves_old_evidence_per_half_life():
    settings = HeadSettings(half_life_s=60.0, min_rows=10**9, device="cpu")  # never calibrated: statistics only
    fresh = BayesianHead.fresh(2)
    theta, curve = np.linspace(0.3, -0.1, fresh.dim), np.array([1.0, 0.5])
    head = update_head(fresh, synthetic_rows(300, theta, curve, seed=2), newest_ts=1000.0, settings=settings)
    empty = HeadRows(np.zeros((0, fresh.dim)), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0))
    later = update_head(head, empty, newest_ts=1120.0, settings=settings)
    assert later.rows == pytest.approx(head.rows / 4)  # two half-lives
    np.testing.assert_allclose(later.stats_a, head.stats_a / 4)


def test_an_uncalibrated_head_and_the_calibrated_prior_serve_the_networks_own_distribution():
    policy = random_policy()
    observation = random_observation(seed=5)
    plain = policy.rank(observation, 5, temperature=1.0, rng=np.random.default_rng(3), target_entropy=0.8)
    with_fresh = RankingPolicy(net=policy.net, head=BayesianHead.fresh())
    same = with_fresh.rank(observation, 5, temperature=1.0, rng=np.random.default_rng(3), target_entropy=0.8)
    assert same.slots == plain.slots and same.log_probs == plain.log_probs
    prior = BayesianHead.fresh()  # calibrated, with its prior mean only (a positive multiple of score_z plus a constant)
    prior.calibrated, prior.prior_mean[0], prior.prior_mean[-1] = True, 0.04, 0.02
    prior.mean = prior.prior_mean.copy()
    calibrated = RankingPolicy(net=policy.net, head=prior)
    assert calibrated.serving_head() is prior
    slate = SlateFeatures(observation, 5)
    for slot in plain.slots:  # the same standardised scores, so the same distribution, at every position of the slate
        mask = slate.available.astype(np.float32)
        np.testing.assert_allclose(
            normalised_scores(calibrated.served_scores(slate.features, observation.context, mask), slate.available),
            normalised_scores(policy.scores(slate.features, observation.context, mask), slate.available),
            atol=1e-9,
        )
        slate.place(slot)


def test_sampling_is_scale_invariant():
    """A policy whose scores are all 1.17 times larger (and shifted) samples the same slates with the same
    probabilities: an update that only rescales changes nothing that serves."""
    policy = random_policy()
    scaled = copy.deepcopy(policy.net)
    scaled.score.weight.data *= 1.17
    scaled.score.bias.data += 3.0
    observation = random_observation(seed=6)
    for target in (0.8, None):
        a = policy.rank(observation, 5, temperature=0.7, rng=np.random.default_rng(1), target_entropy=target)
        b = RankingPolicy(net=scaled).rank(observation, 5, temperature=0.7, rng=np.random.default_rng(1), target_entropy=target)
        assert a.slots == b.slots
        np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-5)
    scores = np.random.default_rng(0).normal(size=K)
    np.testing.assert_allclose(normalised_scores(scores * 1.17 + 3, np.ones(K, bool)), normalised_scores(scores, np.ones(K, bool)), atol=1e-9)


def test_the_head_learns_what_the_network_gets_wrong():
    """The tiny shop's best slate sorts by the item's value. A network that ranks worst first logs rankings; a head
    fitted on them corrects the network's standardised score with its features, and the served policy (head drawn
    once per request, slates sampled) then earns most of the way to the best slate. Exact expected rewards."""
    network = bad_policy(sign=-1.0)
    settings = HeadSettings(half_life_s=0.0, min_rows=300, min_rows_per_position=50.0, prior_rows=(5.0, 50.0, 5.0), device="cpu")
    head = fresh_head(network, settings)
    xs = requests(300, seed=7)
    before = served_value(RankingPolicy(net=network.net, head=head), xs)
    for batch in range(6):
        steps = log_rankings(network, requests(200, seed=100 + batch), temperature=1.0, seed=batch)
        head = update_head(head, head_rows(network, steps), newest_ts=float(batch), settings=settings)
    after = served_value(RankingPolicy(net=network.net, head=head), xs)
    best = np.mean([best_value(x) for x in xs])
    assert head.active and after > before + 0.6 * (best - before), (before, after, best)


def served_value(policy: RankingPolicy, xs: np.ndarray, temperature: float = 0.3, seed: int = 99) -> float:
    """Expected reward per request of ``policy`` as it serves: one head draw per request, standardised served scores."""
    rng = np.random.default_rng(seed)
    head = policy.serving_head()
    total = 0.0
    for x in xs:
        theta = head.draw(rng) if head is not None else None
        mask = np.ones(K, dtype=bool)
        slate = []
        for _ in range(L):
            scores = normalised_scores(policy.served_scores(x, np.zeros(1, np.float32), mask.astype(np.float32), theta), mask)
            logits = np.where(mask, scores / temperature, -np.inf)
            p = np.exp(logits - logits.max())
            slate.append(int(rng.choice(K, p=p / p.sum())))
            mask[slate[-1]] = False
        total += true_value(x, slate)
    return total / len(xs)


def test_non_finite_rows_are_dropped_and_a_singular_update_raises_without_touching_the_head():
    policy = bad_policy(sign=1.0)
    steps = log_rankings(policy, requests(20, seed=8), temperature=1.0, seed=0)
    steps.features[3, 0, 0] = np.nan  # decision 3's candidate 0: its row is dropped if it was the one shown
    steps.actions[3] = 0
    rows = head_rows(policy, steps)
    assert rows.dropped == 1 and np.isfinite(rows.phi).all()
    head = BayesianHead.fresh(F)
    head.calibrated = True
    head.prior_precision[:] = 0.0  # no prior and no rows: nothing pins theta down
    before = copy.deepcopy(head)
    with pytest.raises(HeadError):
        update_head(head, HeadRows(np.zeros((0, head.dim)), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0)), newest_ts=1.0, settings=SETTINGS)
    np.testing.assert_array_equal(head.mean, before.mean)


def test_a_head_saves_and_loads_with_its_policy_and_a_tampered_one_is_refused(tmp_path):
    from ranker.ranking.policy import PolicyError

    fresh = BayesianHead.fresh(F, prior_precision=SETTINGS.prior_rows)
    theta, curve = np.linspace(0.3, -0.1, fresh.dim), np.array([1.0, 0.5])
    head = update_head(fresh, synthetic_rows(1000, theta, curve, seed=3), newest_ts=5.0, settings=SETTINGS)
    policy = RankingPolicy(net=bad_policy().net, head=head)
    policy.save(tmp_path / "v")
    loaded = RankingPolicy.load(tmp_path / "v")
    np.testing.assert_array_equal(loaded.head.mean, head.mean)
    assert loaded.head.calibrated and loaded.manifest["head"]["rows"] == pytest.approx(1000.0)
    shared = RankingPolicy.load(tmp_path / "v", reuse=loaded)
    assert shared.net is loaded.net  # a head-only update reloads no network
    raw = bytearray((tmp_path / "v" / "head.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "v" / "head.safetensors").write_bytes(bytes(raw))
    with pytest.raises(PolicyError, match="sha256"):
        RankingPolicy.load(tmp_path / "v")


def random_policy(seed: int = 0) -> RankingPolicy:
    """A network over the service's features whose scores spread (its last layer scaled up from the near-uniform start)."""
    import torch

    from ranker.ranking.network import SlateNet

    torch.manual_seed(seed)
    net = SlateNet()
    net.score.weight.data *= 300.0
    return RankingPolicy(net=net)


def random_observation(seed: int, n: int = 20) -> Observation:
    """A request's observation with random static features and text vectors."""
    from ranker.ranking.features import CONTEXT_FEATURES, STATIC_FEATURES

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Observation(
        static=rng.normal(size=(n, len(STATIC_FEATURES))).astype(np.float32),
        context=rng.normal(size=len(CONTEXT_FEATURES)).astype(np.float32),
        valid=np.ones(n, bool),
        text_vectors=vectors,
        category_codes=rng.integers(0, 4, n),
    )
