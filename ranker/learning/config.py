"""The online learner's configuration: the deployment's settings (:class:`ranker.config.Settings`, ``RANKER_LEARN_*``,
``RANKER_GATE_*``; ``ranker learn``'s flags) give the defaults of the fields they share, and the rest are the algorithm's
own constants."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from ranker.config import default
from ranker.interactions import REWARD_WEIGHTS


@dataclass(frozen=True)
class HeadSettings:
    """The head's hyperparameters (``LearnerConfig.head_*``; :mod:`ranker.learning.head` reads them)."""

    half_life_s: float = 3600.0
    min_rows: int = 2000
    min_rows_per_position: float = 200.0
    prior_rows: tuple[float, float, float] = (50.0, 500.0, 50.0)  # Lambda_0 for (score_z, each feature, bias), in rows
    device: str = "auto"


@dataclass
class LearnerConfig:
    prefix: str = default("prefix")
    group: str = "learner"
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    attribution_window_s: float = default("attribution_window_s")
    label_delay_s: float = default("learn_label_delay_s")
    batch_size: int = default("learn_batch_size")  # trajectories per update
    min_batch: int = default("learn_min_batch")  # smallest batch the time trigger may use
    update_interval_s: float = default("learn_update_interval_s")  # the oldest ready trajectory waits at most this long
    ppo_every: int = default("learn_ppo_every")  # every n-th update also fine-tunes the network with PPO; 0: never
    head_half_life_s: float = default("learn_head_half_life_s")  # the head's forgetting (ranker.learning.head)
    head_min_rows: int = default("learn_head_min_rows")  # rows before the head is calibrated and serves
    head_prior_rows: tuple[float, float, float] = (50.0, 500.0, 50.0)  # the head's prior precision, in rows: score_z, each feature, bias
    head_min_rows_per_position: float = 200.0  # rows a position needs before its examination is learnt
    holdout_every: int = 5  # every n-th trajectory of a batch (by stream id) goes to the gate's hold-out window
    holdout_window: int = 1000  # the gate's rolling hold-out: the newest held-out rankings
    ope_min_rankings: int = default("gate_min_held_out")  # below this many held-out rankings the off-policy check only notes its estimate
    ope_weight_clip: float | None = 10.0  # the gate's DR caps each per-decision weight here (truncated IS); None: no cap
    replay_window: int = 2000  # trained rankings kept and reused by later updates (ranker.learning.window)
    replay_max_age_s: float = 3600.0  # a replayed ranking older than this (before the batch's newest) is left out
    max_importance_weight: float = 2.0  # replayed decisions' weights pi_prox / mu are clipped here
    user_cap: float = 5.0  # one user's rankings weigh at most this many rankings in a window (ranker.learning.caps)
    max_events_per_position: int = 3  # more events of one type at one position: the ranking is spam
    reward_weights: dict[str, float] = field(default_factory=lambda: dict(REWARD_WEIGHTS))
    clip_range: float = 0.2
    epochs: int = 30  # at most; an update stops early once the policy moved target_kl from the logging one
    target_kl: float = 0.02
    minibatch_steps: int = 512
    advantage: str = "critic"  # "critic": the outcome critic's advantages (ranker.evaluation.critic); "returns": reward-to-go minus the value head
    critic_epochs: int = 30
    critic_max_steps: int = 600  # gradient steps of the critic's fit at most (fewer epochs on a full replay window)
    critic_correction_clip: float = 0.1  # reward units the doubly-robust correction may add or take (a click's worth)
    learning_rate: float = 3e-4
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    gate_env: str | None = default("gate_env")  # None: no simulator gate
    gate_env_kwargs: dict[str, Any] = field(default_factory=dict)
    gate_episodes: int = default("gate_episodes")
    gate_draws: int = default("gate_draws")  # posterior draws the gate averages (a head is judged as it serves)
    gate_seed: int = 20_000
    sim_tolerance: float = default("gate_sim_tolerance")  # reward per session
    ope_tolerance: float = default("gate_ope_tolerance")  # reward per ranking
    bootstrap: int = 500
    reset_after_rejections: int = 5  # the working line goes back to the serving version after this many rejections in a row

    def head_settings(self) -> HeadSettings:
        """The head's hyperparameters (:mod:`ranker.learning.head`)."""
        return HeadSettings(
            half_life_s=self.head_half_life_s,
            min_rows=self.head_min_rows,
            min_rows_per_position=self.head_min_rows_per_position,
            prior_rows=self.head_prior_rows,
            device=self.device,
        )

    keep_versions: int = 20  # retention: newest versions kept on disk (serving and rollback history always kept)
    history_len: int = 20  # the rollback history the learner's promotions keep (newest first)
    guardrail_min_rankings: int = 300
    guardrail_alpha: float = 0.01
    device: str = default("device")
    objective: str = default("objective")  # what the policy optimises (ranker.ranking.objective); recorded in every version
    target_entropy: float = default("target_entropy")  # the serving exploration the gate reproduces (entropy-targeted slates)
    temperature: float = default("temperature")  # ... or the fixed temperature it samples at when the target is 0
    read_count: int = default("learn_read_count")  # entries per stream and read: the learner pages through more (ranker.learning.reading)
    block_ms: int = 1000
    claim_idle_s: float = default("learn_claim_idle_s")  # entries idle this long with any consumer are claimed by a live learner (XAUTOCLAIM)
    claim_every_s: float = 10.0  # how often a learner looks for such entries
    max_attempts: int = 3  # an update that raises is tried this many times in all before its entries are dead-lettered
    retry_backoff_s: float = 2.0  # wait before the n-th retry: retry_backoff_s * 2 ** (n - 1), at most 60 s
    dead_letter_max_len: int = 10_000  # entries kept in the dead-letter stream (oldest trimmed)
    heartbeat_s: float = default("learn_heartbeat_s")  # how often a running learner says so, and its stage, in Redis
    redis_replicas: int = default("redis_replicas")  # replicas that confirm a commit (WAIT) before the update counts as done
    redis_replica_timeout_ms: int = default("redis_replica_timeout_ms")
