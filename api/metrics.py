"""Prometheus metrics (``GET /metrics``).

- ``ranker_http_request_duration_seconds{endpoint,method,status}``: latency histogram per endpoint;
- ``ranker_http_errors_total{endpoint,status}``: 4xx and 5xx answers;
- ``ranker_rankings_total{logged}``: slates served, and whether they reached the event log;
- ``ranker_experiment_rankings_total{experiment,arm}``: slates served inside experiments (``interleaved`` for interleaving);
- ``ranker_feedback_events_total{result}``: ``accepted`` and ``duplicate`` events;
- ``ranker_redis_failures_total``: requests served without Redis;
- ``ranker_policy_serving{version}``: 1 for the version this process serves;
- ``ranker_policy_fallback``: 1 when the pointer's version would not load and this process serves an older one
  (the rollback history, or the packaged starting policy; ``/readyz`` says which and why);
- ``ranker_catalog_items``: items in this process's index;
- ``ranker_catalog_entries_skipped``: catalog stream entries that could not be applied and were
  skipped (read from Redis at scrape; ``{prefix}:catalog:skipped`` keeps each one's reason);
- ``ranker_bridge_fitted_timestamp_seconds``: when the learned text-picture bridge this process serves
  was fitted (0: the ImageNet-label bridge or CLIP);
- ``ranker_query_cache_total{result}``: query text embeddings found in (``hit``) or
  missing from (``miss``) the per-process query cache;
- ``ranker_learner_skipped{reason}``, ``ranker_learner_updates{decision}``: what the
  online learner skipped and decided; ``ranker_learner_errors{kind}``: updates and
  rounds that raised, by the stage they failed in; ``ranker_learner_dead_letters``:
  entries in the dead-letter stream; ``ranker_learner_restarts``: learner processes
  restarted by the server; ``ranker_learner_running``: learner processes with a
  fresh heartbeat; ``ranker_learner_last_update_timestamp_seconds``; and
  ``ranker_learner_feedback_to_serving_seconds{feedback}``: from the oldest and the
  newest feedback the last promoted version learned from to its promotion (all
  read from Redis when scraped).

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (set by ``api/gunicorn_conf.py``)
makes every worker write its samples to files there, and ``/metrics`` sums
them, so one scrape sees the whole server.
"""

from __future__ import annotations

import os
import threading

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, query_cache_baseline: tuple[int, int] = (0, 0)) -> None:
        """``query_cache_baseline``: the cache's (hits, misses) already counted elsewhere (an engine shared with an earlier app)."""
        self.registry = CollectorRegistry()
        registry = self.registry
        self.latency = Histogram(
            "ranker_http_request_duration_seconds", "HTTP request latency", ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.errors = Counter("ranker_http_errors_total", "HTTP 4xx and 5xx answers", ["endpoint", "status"], registry=registry)
        self.rankings = Counter("ranker_rankings_total", "slates served", ["logged"], registry=registry)
        self.experiment_rankings = Counter("ranker_experiment_rankings_total", "slates served inside experiments", ["experiment", "arm"], registry=registry)
        self.feedback = Counter("ranker_feedback_events_total", "feedback events", ["result"], registry=registry)
        self.redis_failures = Counter("ranker_redis_failures_total", "requests served without Redis", registry=registry)
        self.policy = Gauge(
            "ranker_policy_serving", "1 for the policy version this process serves", ["version"], registry=registry, multiprocess_mode="liveall"
        )
        self.policy_fallback = Gauge(
            "ranker_policy_fallback", "1 when the pointer's version would not load and an older one serves", registry=registry, multiprocess_mode="max"
        )
        self.items = Gauge("ranker_catalog_items", "items in this process's index", registry=registry, multiprocess_mode="liveall")
        self.catalog_skipped = Gauge(
            "ranker_catalog_entries_skipped",
            "catalog stream entries that could not be applied and were skipped (read from Redis at scrape)",
            registry=registry,
            multiprocess_mode="max",
        )
        self.bridge_fitted = Gauge(
            "ranker_bridge_fitted_timestamp_seconds",
            "when the learned bridge this process serves was fitted (0: none)",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.learner_skipped = Gauge(
            "ranker_learner_skipped",
            "log entries the learner skipped, by reason (read from Redis at scrape)",
            ["reason"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.learner_updates = Gauge(
            "ranker_learner_updates", "learner updates, by decision (read from Redis at scrape)", ["decision"], registry=registry, multiprocess_mode="max"
        )
        self.learner_errors = Gauge(
            "ranker_learner_errors",
            "learner updates and rounds that raised, by kind (read from Redis at scrape)",
            ["kind"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.learner_dead_letters = Gauge(
            "ranker_learner_dead_letters", "entries in the learner's dead-letter stream (read from Redis at scrape)", registry=registry, multiprocess_mode="max"
        )
        self.learner_restarts = Gauge(
            "ranker_learner_restarts", "learner processes restarted by the server (read from Redis at scrape)", registry=registry, multiprocess_mode="max"
        )
        self.learner_running = Gauge(
            "ranker_learner_running", "learner processes with a fresh heartbeat (read from Redis at scrape)", registry=registry, multiprocess_mode="max"
        )
        self.learner_last_update = Gauge(
            "ranker_learner_last_update_timestamp_seconds",
            "when the learner last decided an update (read from Redis at scrape)",
            registry=registry,
            multiprocess_mode="max",
        )
        self.learner_freshness = Gauge(
            "ranker_learner_feedback_to_serving_seconds",
            "from feedback to serving, for the last promoted version (read from Redis at scrape)",
            ["feedback"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.query_cache = Counter(
            "ranker_query_cache_total", "query text embeddings found in (hit) or missing from (miss) the query cache", ["result"], registry=registry
        )
        self._serving: str | None = None
        for result in ("hit", "miss"):
            self.query_cache.labels(result)  # both series from the start, at 0
        self._cache_counted = query_cache_baseline
        self._cache_lock = threading.Lock()

    def count_query_cache(self, hits: int, misses: int) -> None:
        """Add the cache's hits and misses since the last call (the cache counts; this counter follows it exactly)."""
        with self._cache_lock:
            counted_hits, counted_misses = self._cache_counted
            if hits > counted_hits:
                self.query_cache.labels("hit").inc(hits - counted_hits)
            if misses > counted_misses:
                self.query_cache.labels("miss").inc(misses - counted_misses)
            self._cache_counted = (max(hits, counted_hits), max(misses, counted_misses))

    def learner(self, summary: dict) -> None:
        """Set the learner gauges from :meth:`ranker.learning.status.LearnerStatus.summary`."""
        for reason, count in summary["skipped"].items():
            self.learner_skipped.labels(reason).set(count)
        for decision, count in summary["decisions"].items():
            self.learner_updates.labels(decision).set(count)
        for kind, count in summary["errors"].items():
            self.learner_errors.labels(kind).set(count)
        self.learner_dead_letters.set(summary["dead_letters"])
        self.learner_restarts.set(summary["restarts"])
        self.learner_running.set(len(summary["running"]))
        if summary["last_update"]:
            self.learner_last_update.set(summary["last_update"]["at"])
        freshness = (summary["last_promoted"] or {}).get("feedback_to_serving_s")
        if freshness:
            for which, seconds in freshness.items():
                self.learner_freshness.labels(which).set(seconds)

    def serving(self, version: str | None) -> None:
        if version and version != self._serving:
            if self._serving:
                self.policy.labels(self._serving).set(0)
            self.policy.labels(version).set(1)
            self._serving = version

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
