"""The ranking policy: equivariance, masking, log-probabilities, artifacts, training, evaluation CLI."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import envs  # noqa: F401  (registers the environments)
from ranker.cli import main
from ranker.learning.offline import TrainConfig, train
from ranker.ranking.features import CONTEXT_FEATURES, FEATURES, CandidateSet, FeatureBuilder, UserProfile
from ranker.ranking.network import SlateNet, masked_log_softmax
from ranker.ranking.policy import PolicyError, RankingPolicy, normalised_scores
from ranker.ranking.schema import FEATURE_SCHEMA_VERSION

K, F, C = 12, len(FEATURES), len(CONTEXT_FEATURES)


@pytest.fixture()
def policy() -> RankingPolicy:
    torch.manual_seed(0)
    net = SlateNet(hidden=32)
    with torch.no_grad():  # a net with real spread in its scores, not the near-uniform start
        net.score.weight.normal_(0, 1.0)
    rng = np.random.default_rng(0)  # fitted input standardisation: every path below must apply it
    net.feature_inputs.fit(rng.normal(0.5, 2.0, (400, F)))
    net.context_inputs.fit(rng.normal(-1.0, 0.5, (400, C)))
    return RankingPolicy(net)


def random_observation(rng: np.random.Generator, n: int = K):
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    candidates = CandidateSet(
        item_ids=[f"i{i}" for i in range(n)],
        categories=[f"c{i % 3}" for i in range(n)],
        brands=[f"b{i % 4}" for i in range(n)],
        prices=rng.uniform(5, 200, n),
        has_image=rng.random(n) < 0.5,
        text_vectors=vectors,
        retrieval_scores=np.sort(rng.random(n))[::-1],
        channel_scores={"text": rng.random(n)},
    )
    return FeatureBuilder(K, 5).build(
        candidates, counts=rng.integers(0, 50, (n, 4)).astype(float), profile=UserProfile(), query_has_text=True, query_has_image=False
    )


def test_permuting_candidates_permutes_the_scores(policy):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((K, F)).astype(np.float32)
    context = rng.standard_normal(C).astype(np.float32)
    mask = (rng.random(K) < 0.8).astype(np.float32)
    permutation = rng.permutation(K)
    scores = policy.scores(features, context, mask)
    permuted = policy.scores(features[permutation], context, mask[permutation])
    np.testing.assert_allclose(permuted, scores[permutation], rtol=1e-5, atol=1e-6)
    assert np.std(scores) > 0.01  # not trivially constant


def test_masked_candidates_are_never_chosen(policy):
    rng = np.random.default_rng(2)
    for _ in range(20):
        observation = random_observation(rng, n=9)  # 3 empty slots
        for temperature in (None, 0.5, 5.0):
            ranking = policy.rank(observation, 5, temperature=temperature, rng=rng)
            assert len(set(ranking.slots)) == 5 and all(observation.valid[slot] for slot in ranking.slots)
        features = rng.standard_normal((K, F)).astype(np.float32)
        mask = np.zeros(K, dtype=np.int8)
        mask[rng.choice(K, 3, replace=False)] = 1
        assert mask[policy.act({"features": features, "context": np.zeros(C, np.float32), "mask": mask})] == 1


def test_greedy_is_the_score_order(policy):
    observation = random_observation(np.random.default_rng(3))
    ranking = policy.rank(observation, 5)
    assert ranking.slots == list(np.argsort(-ranking.scores, kind="stable")[:5])
    assert ranking.log_probs is None


def test_log_probabilities_match_the_sampled_slate(policy):
    """Each position's log-probability is the masked softmax of the scores at that step, standardised over the
    candidates still available (sampling is scale-free), and they sum to log P(slate)."""
    from ranker.ranking.features import SlateFeatures

    observation = random_observation(np.random.default_rng(4))
    ranking = policy.rank(observation, 5, temperature=0.7, rng=np.random.default_rng(0))
    slate = SlateFeatures(observation, 5)
    for slot, logged in zip(ranking.slots, ranking.log_probs):
        scores = normalised_scores(policy.scores(slate.features, observation.context, slate.available.astype(np.float32)), slate.available)
        expected = masked_log_softmax(torch.as_tensor(scores), torch.as_tensor(slate.available.astype(np.float32)), 0.7)[slot].item()
        assert logged == pytest.approx(expected, abs=1e-5)
        slate.place(slot)
    # and the sampler follows those probabilities: the first position's empirical frequencies
    rng = np.random.default_rng(5)
    first = [policy.rank(observation, 1, temperature=0.7, rng=rng).slots[0] for _ in range(3000)]
    scores = normalised_scores(
        policy.scores(SlateFeatures(observation, 5).features, observation.context, observation.valid.astype(np.float32)), observation.valid
    )
    probabilities = np.exp(masked_log_softmax(torch.as_tensor(scores), torch.as_tensor(observation.valid.astype(np.float32)), 0.7).numpy())
    empirical = np.bincount(first, minlength=K) / len(first)
    assert np.abs(empirical - probabilities).max() < 0.03


def test_artifact_round_trip_and_refusals(policy, tmp_path, monkeypatch):
    directory = policy.save(tmp_path / "p", training={"env": "x"}, evaluation={"reward_mean": 1.0}, parent="v-parent")
    loaded = RankingPolicy.load(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["parent"] == "v-parent" and manifest["schema_hash"] and manifest["feature_schema"]["features"] == list(FEATURES)
    assert manifest["weights"]["sha256"] and manifest["training"] == {"env": "x"}
    observation = random_observation(np.random.default_rng(6))
    np.testing.assert_allclose(loaded.rank(observation, 5).scores, policy.rank(observation, 5).scores, rtol=1e-6)
    for name in ("feature_inputs.mean", "feature_inputs.scale", "context_inputs.mean", "context_inputs.scale"):  # the standardisation is stored
        assert torch.equal(loaded.net.state_dict()[name], policy.net.state_dict()[name]), name
    # an artifact of feature schema version 1 (before position-debiased rates, price_vs_category and stored
    # standardisation) is refused, with the versions and what to do
    old = dict(manifest, schema_hash="34d91bebf90ff61e", feature_schema={**manifest["feature_schema"], "version": 1, "hash": "34d91bebf90ff61e"})
    (directory / "manifest.json").write_text(json.dumps(old))
    expected = rf"feature schema 34d91bebf90ff61e \(version 1\), but this service builds schema .* \(version {FEATURE_SCHEMA_VERSION}\); retrain"
    with pytest.raises(PolicyError, match=expected):
        RankingPolicy.load(directory)
    # another feature schema is refused with a clear message
    manifest["schema_hash"] = "0000000000000000"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PolicyError, match="feature schema 0000000000000000.*retrain"):
        RankingPolicy.load(directory)
    # tampered weights are refused
    policy.save(directory)
    weights = directory / "policy.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyError, match="sha256"):
        RankingPolicy.load(directory)
    with pytest.raises(PolicyError, match="no manifest.json"):
        RankingPolicy.load(tmp_path / "nothing")


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(
        env_id="envs/SlateShoppingTiny-v0",
        timesteps=2048,
        n_envs=4,
        n_steps=64,
        batch_size=128,
        n_epochs=4,
        learning_rate=3e-3,
        hidden=32,
        eval_every=1024,
        eval_episodes=200,
        device="cpu",
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def test_same_seed_gives_the_same_policy(tmp_path):
    first = train(tiny_config(timesteps=512, eval_every=512), tmp_path / "a", progress=False)
    second = train(tiny_config(timesteps=512, eval_every=512), tmp_path / "b", progress=False)
    other = train(tiny_config(timesteps=512, eval_every=512, seed=1), tmp_path / "c", progress=False)
    for name, tensor in first.net.state_dict().items():
        assert torch.equal(tensor, second.net.state_dict()[name]), name
    assert any(not torch.equal(tensor, other.net.state_dict()[name]) for name, tensor in first.net.state_dict().items())


def test_short_training_beats_random_on_the_tiny_env(tmp_path):
    from envs.evaluation import run_policy
    from envs.policies import RandomPolicy

    policy = train(tiny_config(), tmp_path / "tiny", progress=False)
    env = gym.make("envs/SlateShoppingTiny-v0")
    trained = run_policy(env, policy, episodes=1500, seed=7)
    random = run_policy(env, RandomPolicy(0), episodes=1500, seed=7)
    assert trained.summary()["reward_ci95"][0] > random.summary()["reward_ci95"][1]
    # the input standardisation was fitted on the training worlds, and serving applies it
    assert policy.net.feature_inputs.scale.min() >= 1e-2 and (policy.net.feature_inputs.mean.abs() > 0.05).sum() >= 5
    # the artifact records the run
    manifest = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    assert manifest["training"]["env_id"] == "envs/SlateShoppingTiny-v0" and manifest["training"]["learning_curve"]
    assert list((tmp_path / "tiny" / "checkpoints").iterdir()) and list((tmp_path / "tiny" / "tensorboard").rglob("events.out.tfevents*"))


def test_cli_train_then_evaluate_prints_the_table_and_writes_plots(tmp_path):
    runner = CliRunner()
    out = tmp_path / "policy"
    trained = runner.invoke(
        main,
        [
            "train",
            "--env",
            "envs/SlateShoppingTiny-v0",
            "--timesteps",
            "1024",
            "--n-envs",
            "4",
            "--eval-every",
            "512",
            "--eval-episodes",
            "50",
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "saved policy" in trained.output and (out / "manifest.json").exists()
    result = runner.invoke(
        main, ["evaluate", "--env", "envs/SlateShoppingTiny-v0", "--policy", str(out), "--episodes", "200", "--log-episodes", "200", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["env"] == "envs/SlateShoppingTiny-v0" and report["episodes"] == 200
    assert set(report["policies"]) == {
        "ppo",
        "retrieval",
        "popularity",
        "lambdamart",
        "linear_bandit",
        "critic_greedy",
        "random",
        "intent_blind_oracle",
        "oracle",
    }
    for row in report["policies"].values():
        assert {"reward_mean", "reward_ci95", "clicks_mean", "purchases_mean", "oracle_ratio"} <= set(row)
        assert row["reward_ci95"][0] <= row["reward_mean"] <= row["reward_ci95"][1]
    assert report["policies"]["oracle"]["oracle_ratio"] == pytest.approx(1.0)
    for plot in ("evaluation.png", "learning_curve.png"):
        assert (out / "evaluation" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(main, ["evaluate", "--env", "envs/SlateShoppingTiny-v0", "--policy", str(tmp_path)])
    assert bad.exit_code != 0 and "manifest.json" in bad.output


def test_packaged_starting_policy_loads_and_beats_retrieval_in_its_own_evaluation():
    from ranker.live.registry import STARTING_POLICY

    policy = RankingPolicy.load(STARTING_POLICY)  # checksum and feature schema verified on load
    evaluation = policy.manifest["evaluation"]["held_out"]
    assert policy.manifest["training"]["timesteps"] >= 300_000
    assert evaluation["reward_ci95"][0] > 0.7  # retrieval scores 0.64 on the demo shop (bench/README.md)


def test_numpy_serving_scores_match_the_torch_network(policy):
    rng = np.random.default_rng(9)
    features = rng.standard_normal((K, F)).astype(np.float32)
    context = rng.standard_normal(C).astype(np.float32)
    mask = (rng.random(K) < 0.7).astype(np.float32)
    with torch.no_grad():
        expected, _ = policy.net(torch.as_tensor(features[None]), torch.as_tensor(context[None]), torch.as_tensor(mask[None]))
    np.testing.assert_allclose(policy.scores(features, context, mask), expected[0].numpy(), rtol=1e-4, atol=1e-5)


def test_the_entropy_target_is_met_on_random_inputs():
    from ranker.ranking.policy import MAX_ENTROPY_SHARE, entropies, temperature_for_entropy

    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(2, 150))
        scores = rng.normal(0, rng.uniform(0.01, 30), k)
        available = rng.random(k) < 0.8
        available[:2] = True
        target = rng.uniform(0.05, 3.0)
        temperature = temperature_for_entropy(scores, available, target)
        reached = entropies(scores[available], np.array([temperature]))[0]
        assert reached == pytest.approx(min(target, MAX_ENTROPY_SHARE * np.log(available.sum())), abs=2e-3), (k, target, temperature)
    assert temperature_for_entropy(np.ones(5), np.ones(5, dtype=bool), 1.0) == 1.0  # every choice alike: nothing to solve


def test_cold_items_get_a_fading_bonus_and_the_logged_propensities_include_it(policy):
    from ranker.ranking.features import SlateFeatures
    from ranker.ranking.policy import cold_start_bonus

    bonus = cold_start_bonus(np.array([0, 5, 20, 400]), 6, bonus=2.0, impressions_for_warm=20)
    np.testing.assert_allclose(bonus, [2.0, 1.5, 0.0, 0.0, 0.0, 0.0])  # fades to 0 at 20 impressions; padding slots get none
    observation = random_observation(np.random.default_rng(11))
    slate = SlateFeatures(observation, 5)
    scores = policy.scores(slate.features, observation.context, slate.available.astype(np.float32))
    cold = int(np.argsort(np.where(observation.valid, scores, np.inf))[0])  # the candidate the policy likes least
    boost = np.zeros(K)
    boost[cold] = 3.0
    ranking = policy.rank(observation, 5, temperature=0.7, rng=np.random.default_rng(0), bonus=boost)
    expected = masked_log_softmax(
        torch.as_tensor(normalised_scores(scores, slate.available) / 0.7 + boost), torch.as_tensor(slate.available.astype(np.float32))
    )[ranking.slots[0]]
    assert ranking.log_probs[0] == pytest.approx(expected.item(), abs=1e-5)  # the propensity of what was actually sampled
    rng = np.random.default_rng(12)
    shown = [cold in policy.rank(observation, 5, temperature=0.7, rng=rng, bonus=boost).slots for _ in range(400)]
    plain = [cold in policy.rank(observation, 5, temperature=0.7, rng=rng).slots for _ in range(400)]
    assert np.mean(shown) > np.mean(plain) + 0.1  # the cold item is shown markedly more often


def test_standardisation_reads_a_column_constant_in_training_as_zero_and_clips_the_rest():
    from ranker.ranking.network import Standardiser
    from ranker.ranking.standardise import CLIP

    rows = np.column_stack([np.ones(200), np.random.default_rng(0).normal(0.05, 0.01, 200)])  # has_image always 1 in training
    standardiser = Standardiser(2).fit(rows)
    live = torch.tensor([[0.0, 0.05], [1.0, 5.0]])  # an item without a picture; a rate far outside training
    out = standardiser(live)
    assert out[:, 0].tolist() == [0.0, 0.0]  # nothing was learned from the constant column: it cannot move a score
    assert out[1, 1].item() == CLIP and abs(out[0, 1].item()) < 0.5
    policy = RankingPolicy(SlateNet(n_features=2, n_context=1, hidden=8))
    policy.net.feature_inputs.fit(rows)
    features, context, mask = np.array([[0.0, 0.05], [1.0, 5.0]], np.float32), np.zeros(1, np.float32), np.ones(2, np.float32)
    with torch.no_grad():
        expected, _ = policy.net(torch.as_tensor(features[None]), torch.as_tensor(context[None]), torch.as_tensor(mask[None]))
    np.testing.assert_allclose(policy.scores(features, context, mask), expected[0].numpy(), rtol=1e-5, atol=1e-6)  # serving's numpy path agrees
