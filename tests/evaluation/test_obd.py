"""The off-policy estimators on real logs (issue 33): the Open Bandit Dataset sample that ships inside ``obp==0.4.1``
(ZOZOTOWN, 10,000 logged impressions per campaign, 80 items, 3 positions, logged propensities), against Open Bandit
Pipeline's own estimators on the same inputs.

OBP 0.4.1's ``OpenBanditDataset`` preprocessing fails on pandas 2, so the CSVs are read directly.

- **One decision per round.** Each logged impression is a ranking of one decision (position 0 for the project; OBP
  reads its ``position``). IPS, SNIPS and DR must equal OBP's ``InverseProbabilityWeighting``,
  ``SelfNormalizedInverseProbabilityWeighting`` and ``DoublyRobust`` within 1e-9, DR with the same reward model (the
  project's :func:`ranker.evaluation.ope.ridge_reward_model`), on both campaigns.
- **Slates.** The sample holds no complete round (every timestamp is unique: impressions were sampled), so rankings
  are assembled from the Random campaign: the j-th impression at positions 1, 2 and 3, in time order. The Random
  policy draws each position's item uniformly and independently (propensity 1/80), so an assembled triple has the
  propensities of a logged slate of that policy; its clicks are real but were not caused together. The project's
  per-decision weights ``w[i,t] = prod_{s<=t} pi/mu`` are the *reward interaction* (cascade) assumption: its IPS
  equals OBP's ``SlateRewardInteractionIPS`` within 1e-9 and differs from ``SlateStandardIPS`` (whole-slate weight,
  no assumption) and ``SlateIndependentIPS`` (each position's own weight, independence).
- **A learned policy.** The project's reward model fitted on the BTS campaign gives a softmax policy; its DR value and
  its improvement over the logged policy on the Random campaign, with 95% bootstrap intervals, are printed
  (``pytest -s``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import obp
import pandas as pd
import pytest
from obp.ope import (
    DoublyRobust,
    InverseProbabilityWeighting,
    SelfNormalizedInverseProbabilityWeighting,
    SlateIndependentIPS,
    SlateRewardInteractionIPS,
    SlateStandardIPS,
)

from ranker.evaluation.ope import PerDecisionDR, PerDecisionIPS, PerDecisionSNIPS, RidgeRewardModel, ridge_reward_model

OBD = Path(obp.__file__).resolve().parent / "dataset" / "obd"
N_ITEMS, N_POSITIONS = 80, 3
AGREEMENT = 1e-9
TABLE: list[tuple[str, float, float]] = []  # (estimator, project value, OBP value), printed at the end


@dataclass
class Campaign:
    """One campaign's logged impressions, in time order."""

    item: np.ndarray  # [n] the logged action
    position: np.ndarray  # [n] 0-based
    click: np.ndarray  # [n] 0/1
    pscore: np.ndarray  # [n] the logging policy's propensity
    affinity: np.ndarray  # [n, 80] the user-item affinity of each item
    item_feature: np.ndarray  # [80] item_feature_0
    item_kind: np.ndarray  # [80] item_feature_1 as codes (12 kinds)


def read_campaign(name: str) -> Campaign:
    logged = pd.read_csv(OBD / name / "all" / "all.csv", index_col=0).sort_values("timestamp", kind="stable")
    items = pd.read_csv(OBD / name / "all" / "item_context.csv", index_col=0).sort_values("item_id")
    return Campaign(
        item=logged["item_id"].to_numpy(np.int64),
        position=logged["position"].to_numpy(np.int64) - 1,  # OBD counts positions from 1
        click=logged["click"].to_numpy(np.float64),
        pscore=logged["propensity_score"].to_numpy(np.float64),
        affinity=logged[[f"user-item_affinity_{item}" for item in range(N_ITEMS)]].to_numpy(np.float64),
        item_feature=items["item_feature_0"].to_numpy(np.float64),
        item_kind=np.unique(items["item_feature_1"].to_numpy(str), return_inverse=True)[1],
    )


@pytest.fixture(scope="module")
def random_campaign() -> Campaign:
    return read_campaign("random")


@pytest.fixture(scope="module")
def bts_campaign() -> Campaign:
    return read_campaign("bts")


def evaluation_policy(campaign: Campaign, rows: np.ndarray) -> np.ndarray:
    """[len(rows), 80, 3] a fixed stochastic policy: a softmax over the user's affinities and the item feature that
    favours other items at each position."""
    scores = 2.0 * campaign.affinity[rows][:, :, None] + campaign.item_feature[None, :, None] * np.array([1.0, -0.5, 0.25])[None, None, :]
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def candidate_features(campaign: Campaign, rows: np.ndarray, position: np.ndarray, item_ctr: np.ndarray) -> np.ndarray:
    """[len(rows), 80, 6] what the reward model reads of each candidate: affinity, item feature, the item's click rate
    in the other campaign, the position (one-hot)."""
    n = len(rows)
    features = np.zeros((n, N_ITEMS, 6))
    features[:, :, 0] = campaign.affinity[rows]
    features[:, :, 1] = campaign.item_feature[None, :]
    features[:, :, 2] = item_ctr[None, :]
    features[np.arange(n), :, 3 + position] = 1.0
    return features


def item_features(campaign: Campaign, rows: np.ndarray, position: np.ndarray) -> np.ndarray:
    """[len(rows), 80, F] for a reward model that can carry over between campaigns: affinity, the item's context
    (item_feature_0 and item_feature_1 one-hot) and the position (one-hot); no click rates."""
    n = len(rows)
    kinds = campaign.item_kind.max() + 1
    features = np.zeros((n, N_ITEMS, 2 + kinds + N_POSITIONS), dtype=np.float32)
    features[:, :, 0] = campaign.affinity[rows]
    features[:, :, 1] = campaign.item_feature[None, :]
    features[:, np.arange(N_ITEMS), 2 + campaign.item_kind] = 1.0
    features[np.arange(n), :, 2 + kinds + position] = 1.0
    return features


def item_click_rate(campaign: Campaign) -> np.ndarray:
    shown = np.bincount(campaign.item, minlength=N_ITEMS)
    return np.bincount(campaign.item, weights=campaign.click, minlength=N_ITEMS) / np.maximum(shown, 1)


def one_decision(campaign: Campaign, other: Campaign) -> dict[str, np.ndarray]:
    """Each impression as a ranking of one decision: the project's inputs and OBP's, from the same numbers."""
    n = len(campaign.item)
    rows = np.arange(n)
    pi = evaluation_policy(campaign, rows)  # [n, 80, 3]
    features = candidate_features(campaign, rows, campaign.position, item_click_rate(other))
    q = ridge_reward_model(features, np.ones((n, N_ITEMS)), campaign.item, campaign.click)  # [n, 80]
    return {
        "ranking": rows,
        "action": campaign.item,
        "reward": campaign.click,
        "pscore": campaign.pscore,
        "action_dist": pi[rows, :, campaign.position],  # the policy at the impression's own position
        "obp_action_dist": pi,
        "q": q,
        "obp_q": np.repeat(q[:, :, None], N_POSITIONS, axis=2),  # OBP reads q[i, :, position_i]: the same numbers
    }


def agree(name: str, project: float, reference: float) -> None:
    TABLE.append((name, project, reference))
    assert abs(project - reference) <= AGREEMENT, (name, project, reference)


@pytest.mark.parametrize("campaign_name", ["random", "bts"])
def test_ips_snips_dr_equal_obp_on_each_campaign(campaign_name, random_campaign, bts_campaign):
    campaign, other = (random_campaign, bts_campaign) if campaign_name == "random" else (bts_campaign, random_campaign)
    logged = one_decision(campaign, other)
    project = {
        "ranking": logged["ranking"],
        "position": np.zeros(len(logged["action"]), dtype=np.int64),
        "action": logged["action"],
        "reward": logged["reward"],
        "pscore": logged["pscore"],
        "action_dist": logged["action_dist"],
    }
    reference = {
        "reward": logged["reward"],
        "action": logged["action"],
        "position": campaign.position,
        "pscore": logged["pscore"],
        "action_dist": logged["obp_action_dist"],
    }
    agree(f"IPS ({campaign_name})", PerDecisionIPS().estimate_policy_value(**project), InverseProbabilityWeighting().estimate_policy_value(**reference))
    agree(
        f"SNIPS ({campaign_name})",
        PerDecisionSNIPS().estimate_policy_value(**project),
        SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**reference),
    )
    agree(
        f"DR ({campaign_name})",
        PerDecisionDR().estimate_policy_value(**project, estimated_rewards_by_reg_model=logged["q"]),
        DoublyRobust().estimate_policy_value(**reference, estimated_rewards_by_reg_model=logged["obp_q"]),
    )


def assembled_slates(campaign: Campaign) -> tuple[np.ndarray, int]:
    """Row indices [n_slates * 3], each slate's rows in position order: the j-th impression at each position."""
    by_position = [np.flatnonzero(campaign.position == position) for position in range(N_POSITIONS)]
    n_slates = min(len(rows) for rows in by_position)
    return np.stack([rows[:n_slates] for rows in by_position], axis=1).reshape(-1), n_slates


def test_the_project_s_slate_weights_are_the_reward_interaction_assumption(random_campaign):
    campaign = random_campaign
    rows, n_slates = assembled_slates(campaign)
    position = np.tile(np.arange(N_POSITIONS), n_slates)
    slate = np.repeat(np.arange(n_slates), N_POSITIONS)
    item, click, mu = campaign.item[rows], campaign.click[rows], campaign.pscore[rows]
    pi = evaluation_policy(campaign, rows)[np.arange(len(rows)), :, position]  # each decision's own context and position
    pi_chosen = pi[np.arange(len(rows)), item]
    project = PerDecisionIPS().estimate_policy_value(ranking=slate, position=position, action=item, reward=click, pscore=mu, action_dist=pi)

    def per_slate(values: np.ndarray, how: str) -> np.ndarray:
        table = values.reshape(n_slates, N_POSITIONS)
        return (np.cumprod(table, axis=1) if how == "cascade" else np.repeat(table.prod(axis=1, keepdims=True), N_POSITIONS, axis=1)).reshape(-1)

    common = {"slate_id": slate, "reward": click, "position": position}
    rips = SlateRewardInteractionIPS(len_list=N_POSITIONS).estimate_policy_value(
        **common, pscore_cascade=per_slate(mu, "cascade"), evaluation_policy_pscore_cascade=per_slate(pi_chosen, "cascade")
    )
    sips = SlateStandardIPS(len_list=N_POSITIONS).estimate_policy_value(
        **common, pscore=per_slate(mu, "joint"), evaluation_policy_pscore=per_slate(pi_chosen, "joint")
    )
    iips = SlateIndependentIPS(len_list=N_POSITIONS).estimate_policy_value(**common, pscore_item_position=mu, evaluation_policy_pscore_item_position=pi_chosen)
    agree("slate IPS (random, 3 positions) vs SlateRewardInteractionIPS", project, rips)
    TABLE.append(("slate IPS vs SlateStandardIPS (other assumption)", project, sips))
    TABLE.append(("slate IPS vs SlateIndependentIPS (other assumption)", project, iips))
    assert abs(project - sips) > 1e-6 and abs(project - iips) > 1e-6  # the comparison can tell the assumptions apart


def test_a_policy_learned_with_the_project_s_reward_model_has_a_dr_interval(random_campaign, bts_campaign, capsys):
    """The project's reward model fitted on the BTS campaign's logs gives a softmax policy over each impression's
    candidates; DR (reward model refitted on the evaluation logs, as the gate does) on the Random campaign, whose
    uniform logging supports every policy, gives its value and its improvement over the logged policy."""
    campaign, n = random_campaign, len(random_campaign.item)
    learned_from = RidgeRewardModel().fit(
        item_features(bts_campaign, np.arange(len(bts_campaign.item)), bts_campaign.position), bts_campaign.item, bts_campaign.click
    )
    features = item_features(campaign, np.arange(n), campaign.position)
    predicted = learned_from.predict(features, np.ones((n, N_ITEMS)))
    logits = (predicted - predicted.max(axis=1, keepdims=True)) / predicted.std(axis=1, keepdims=True)
    action_dist = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # the learned policy
    q = ridge_reward_model(features, np.ones((n, N_ITEMS)), campaign.item, campaign.click)
    logged = {
        "ranking": np.arange(n),
        "position": np.zeros(n, dtype=np.int64),
        "action": campaign.item,
        "reward": campaign.click,
        "pscore": campaign.pscore,
        "action_dist": action_dist,
        "estimated_rewards_by_reg_model": q,
    }
    value = PerDecisionDR().estimate_interval(**logged, n_bootstrap_samples=1000, random_state=0)
    improvement = PerDecisionDR().estimate_improvement_interval(**logged, n_bootstrap_samples=1000, random_state=0)
    obp_dr = DoublyRobust().estimate_policy_value(
        reward=campaign.click,
        action=campaign.item,
        position=np.zeros(n, dtype=np.int64),
        pscore=campaign.pscore,
        action_dist=action_dist[:, :, None],
        estimated_rewards_by_reg_model=q[:, :, None],
    )
    agree("DR (random, policy learned on bts)", value.value, obp_dr)
    logged_value = float(campaign.click.mean())
    assert value.low <= value.value <= value.high and improvement.low <= improvement.value <= improvement.high
    assert improvement.value == pytest.approx(value.value - logged_value, abs=1e-12)
    # the logging policy (uniform) evaluated by IPS on its own logs is its observed click rate
    on_policy = {name: values for name, values in logged.items() if name != "estimated_rewards_by_reg_model"}
    uniform = np.full((n, N_ITEMS), 1.0 / N_ITEMS)
    assert PerDecisionIPS().estimate_policy_value(**{**on_policy, "action_dist": uniform}) == pytest.approx(logged_value, rel=1e-9)
    with capsys.disabled():
        print(
            f"\nOBD Random campaign ({n} impressions): logged click rate {logged_value:.5f}; policy learned on BTS, DR "
            f"{value.value:.5f} [{value.low:.5f}, {value.high:.5f}]; improvement {improvement.value:+.5f} [{improvement.low:+.5f}, {improvement.high:+.5f}]"
        )


def test_print_the_agreement_table(capsys):
    """Runs last in this file: the closing note's table (``pytest tests/evaluation/test_obd.py -s``)."""
    assert TABLE, "the agreement tests did not run"
    with capsys.disabled():
        print("\n| estimator | project | OBP 0.4.1 | difference |\n|---|---|---|---|")
        for name, project, reference in TABLE:
            print(f"| {name} | {project:.12g} | {reference:.12g} | {project - reference:.1e} |")
