"""The online learner's settings (``ranker learn``'s flags and ``RANKER_LEARN_*`` variables set them)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from ranker.live.events import REWARD_WEIGHTS


@dataclass
class LearnerConfig:
    prefix: str = "ranker"
    group: str = "learner"
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    attribution_window_s: float = 30 * 60
    label_delay_s: float = 10.0
    batch_size: int = 256  # trajectories per update
    min_batch: int = 32  # smallest batch the time trigger may use
    update_interval_s: float = 20.0  # the oldest ready trajectory waits at most this long
    max_staleness: int = 3  # promotions the logging version may lag behind the serving one
    holdout_every: int = 5  # every n-th trajectory (by stream id) is held out for the off-policy gate
    reward_weights: dict[str, float] = field(default_factory=lambda: dict(REWARD_WEIGHTS))
    clip_range: float = 0.2
    epochs: int = 4
    minibatch_steps: int = 512
    learning_rate: float = 3e-4
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    gate_env: str | None = "envs/SlateShopping-v0"  # None: no simulator gate
    gate_env_kwargs: dict[str, Any] = field(default_factory=dict)
    gate_episodes: int = 1000
    gate_seed: int = 20_000
    sim_tolerance: float = 0.02  # reward per session
    ope_tolerance: float = 0.05  # reward per ranking
    bootstrap: int = 500
    reset_after_rejections: int = 5  # the working line goes back to the serving version after this many rejections in a row
    keep_versions: int = 20  # retention: newest versions kept on disk (serving and rollback history always kept)
    guardrail_min_rankings: int = 300
    guardrail_alpha: float = 0.01
    device: str = "auto"
    read_count: int = 1000
    block_ms: int = 1000
    max_attempts: int = 3  # an update that raises is tried this many times in all before its entries are dead-lettered
    retry_backoff_s: float = 2.0  # wait before the n-th retry: retry_backoff_s * 2 ** (n - 1), at most 60 s
    dead_letter_max_len: int = 10_000  # entries kept in the dead-letter stream (oldest trimmed)
    heartbeat_s: float = 5.0  # how often a running learner says so in Redis (the console and /metrics read it)
