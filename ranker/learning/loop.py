"""Online learning: the Redis event log -> Bayesian-head updates (and PPO fine-tunes) -> gated policy versions.

The learner is one process beside the servers (``ranker learn``). Each round:

1. **Read** the rankings and interactions streams through a consumer group
   (:mod:`ranker.learning.reading`): at start its own pending entries, page by
   page, so a learner killed at any point resumes with everything it had not
   committed; entries idle past a limit with a consumer that is gone
   (XAUTOCLAIM); then new ones. A ranking delivered twice is joined once.
2. **Join** (:class:`Joiner`). A ranking waits ``label_delay_s`` after its
   last activity (the ranking, or an interaction with it) for more feedback,
   then becomes a :class:`Trajectory`: the logged feature snapshot, the slots
   the policy chose, their logged log-probabilities, and per-position rewards
   (click 0.1, add to cart 0.3, purchase 1.0 by default, as in the
   simulator). Interactions must fall inside the attribution window
   (``attribution_window_s`` after the ranking); later ones, ones for unknown
   or expired rankings, repeats of an event id, and ones that arrive after
   their ranking was already used ("late") are skipped and counted. The
   label delay trades completeness for freshness: feedback that comes after
   it still updates live counters and profiles, but not the learner.
3. **Filter**. Rankings served greedily carry no propensities; rankings whose
   feature layout is not this code's schema, or that hold NaN or infinite
   values, are skipped; rankings with more events than a shopper could send
   are spam (:mod:`ranker.learning.caps`). A ranking logged by an older
   version still teaches: the head's regression needs no propensities, and
   PPO weighs it from the version that logged it (clipped).
4. **Update**, every few seconds of traffic (a batch is due at
   ``batch_size`` rankings or when its oldest waited ``update_interval_s``):
   every 5th ranking goes to the gate's rolling hold-out; every shown item of
   the others is a row of the **Bayesian head** (:mod:`ranker.learning.head`):
   a closed-form posterior update over a linear correction of the network's
   score, deterministic for a given head and batch, on CUDA when present.
   Every ``ppo_every``-th update also **fine-tunes the network** with PPO
   (:func:`ppo_update`: decoupled, the outcome critic's advantages, the batch
   with the replay window, scale-free probabilities) from the *serving*
   network (never from a rejected candidate's), and refits a head on it; that
   candidate is judged first and the head-only one serves when it fails. The
   learner keeps its own line of versions (the "working" version: its latest
   candidate), so the head's evidence accumulates while the gate decides what
   serves; the line restarts from the serving version when that moves under
   it or after ``reset_after_rejections`` rejections in a row.
5. **Gate** (:func:`gate`): the candidate judged as it would serve (its
   temperature, the logged cold-start bonus, the head's posterior draws) by
   a doubly-robust off-policy estimate on the rolling hold-out, a
   non-inferiority test on its lower bound; *deferred* (neither promoted nor
   counted as a rejection) until the hold-out has ``ope_min_rankings``. A new
   network also passes the simulator's catastrophe guard
   (:mod:`ranker.learning.gate`).
6. **Commit**: one Redis transaction acknowledges every entry the batch used,
   records the decision and the working version, adds the batch to the windows, folds the batch's rewards
   into per-version reward statistics and, when the gate passed and the
   serving version has not moved meanwhile, moves the policy pointer. Nothing is acknowledged
   before that, so a crash repeats the batch (same entries, same update, same
   version name) and nothing is counted twice.
7. **Guardrail**: once a promoted version has ``guardrail_min_rankings``
   rankings of live reward, a one-sided Welch test against its parent rolls
   it back on a significant drop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from ranker.experiments.store import ExperimentStore
from ranker.learning.caps import capped_holdout, step_weights
from ranker.learning.config import LearnerConfig
from ranker.learning.failures import CRASH_POINTS, FailedUpdates, _crash_point  # noqa: F401  (CRASH_POINTS re-exported)
from ranker.learning.gate import gate, gate_uses_live_catalog
from ranker.learning.guardrail import guardrail, queue_reward, reward_stats
from ranker.learning.head import fresh_head, head_rows, update_head
from ranker.learning.holdout import HoldoutCache
from ranker.learning.join import SKIP_REASONS, Joiner, Trajectory, replayable, stream_order
from ranker.learning.reading import StreamReader, erased_users
from ranker.learning.replay import log_probs_of, replay
from ranker.learning.status import LearnerStatus
from ranker.learning.update import load_optimiser, ppo_update, save_optimiser
from ranker.learning.window import TrajectoryWindow
from ranker.learning.world import live_counter_settings
from ranker.live.backend import as_text, confirm_replicated, key
from ranker.live.events import EventLog
from ranker.live.registry import PolicyRegistry
from ranker.ranking.head import HeadError
from ranker.ranking.policy import RankingPolicy

log = logging.getLogger(__name__)


@dataclass
class UpdateReport:
    version: str
    parent: str
    trajectories: int
    decision: str  # promoted | rejected | superseded | replayed
    gate: dict[str, Any]
    training: dict[str, Any]
    seconds: float


class Stages:
    """Seconds per stage of an update (``timings``), for the decision record and the keeping-up figures."""

    def __init__(self, timings: dict[str, float]):
        self.timings = timings
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(self.timings.get(stage, 0.0) + now - self._last, 4)
        self._last = now


class Learner(FailedUpdates):
    """Reads the event log, updates, gates and commits (module docstring)."""

    def __init__(
        self, client: redis.Redis, policies_dir: Path, config: LearnerConfig | None = None, *, clock: Callable[[], float] = time.time, catalog: Any = None
    ):
        """``catalog``: the deployment's :class:`ranker.learning.world.LiveCatalog`, the world of the simulator gate
        (unless the configuration names another, see :func:`gate_uses_live_catalog`)."""
        self.client = client
        self.config = config or LearnerConfig()
        self.clock = clock
        self.catalog = catalog
        self.stage = "idle"  # where the learner is: an update that raises is counted under this kind
        # the objective's purchase values need item prices: the live catalog's (purchases: every purchase is worth 1)
        self.values_of = None
        if self.config.objective != "purchases":
            if catalog is None:
                raise ValueError(f"objective: {self.config.objective!r} weighs purchases by price, so the learner needs the live catalog")
            self.values_of = lambda item_ids: catalog.values_of(item_ids, self.config.objective)
        self._retry_at = 0.0
        self.registry = PolicyRegistry(client, policies_dir, prefix=self.config.prefix)
        self.events = EventLog(client, prefix=self.config.prefix)
        self.joiner = Joiner(self.config, self.values_of)
        self.ready: list[Trajectory] = []
        self.status = LearnerStatus(client, prefix=self.config.prefix, group=self.config.group)
        self.decisions_key, self.counts_key = self.status.decisions_key, self.status.counts_key
        self.errors_key, self.attempts_key, self.dead_key = self.status.errors_key, self.status.attempts_key, self.status.dead_key
        self.working_key = key(self.config.prefix, "learner", self.config.group, "working")
        self.replay_window = TrajectoryWindow(client, key(self.config.prefix, "learner", self.config.group, "replay"), self.config.replay_window)
        self.holdout_window = TrajectoryWindow(client, key(self.config.prefix, "learner", self.config.group, "holdout"), self.config.holdout_window)
        self.updates: list[UpdateReport] = []
        self.holdout_inputs = HoldoutCache()  # the gate's hold-out as the served policy reads it, per ranking
        self.reader = StreamReader(client, self.config, self._streams(), lambda: self.joiner, self.clock)
        self._crashes: dict[str, int] = {}
        self._ensure_groups()

    def _streams(self) -> dict[str, str]:
        return {"rankings": self.events.rankings_stream, "interactions": self.events.interactions_stream}

    def _ensure_groups(self) -> None:
        for stream in self._streams().values():
            try:
                self.client.xgroup_create(stream, self.config.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # ------------------------------------------------------------- reading
    def poll(self, block_ms: int | None = None) -> int:
        """Read entries into the joiner; returns how many (see :mod:`ranker.learning.reading`).

        First this consumer's own pending entries, a page of ``read_count`` at a time from where the last page ended
        (a learner restarted under its name resumes them); then, every ``claim_every_s``, entries other consumers
        left idle past ``claim_idle_s`` (XAUTOCLAIM: a learner that died and never came back); then new entries.
        It blocks for new ones only once both streams are read to their end."""
        return self.reader.poll(self.config.block_ms if block_ms is None else block_ms)

    def _watermark(self, now: float) -> float:
        """The time up to which every interaction is read: now once the interactions stream is read to its end,
        else the time of the last one read. A ranking becomes a trajectory only once the watermark passed its label
        delay, so one read in pages has all the feedback that a reader at that time would have had."""
        return min(now, self.reader.watermark(now))

    def _not_erased(self, trajectories: list[Trajectory]) -> list[Trajectory]:
        """Leave out the rankings of users erased since they were logged: acknowledged, counted, never learned from."""
        gone = erased_users(self.client, self.config.prefix, {t.event.user_key for t in trajectories}) if trajectories else set()
        if not gone:
            return trajectories
        for trajectory in (t for t in trajectories if t.event.user_key in gone):
            self.joiner.skipped["erased"] += 1
            self.joiner.done_entries.append(("rankings", trajectory.entry_id))
            self.joiner.done_entries.extend(("interactions", entry) for entry in trajectory.interaction_entries)
        return [t for t in trajectories if t.event.user_key not in gone]

    # -------------------------------------------------------------- rounds
    def step(self, *, force: bool = False, block_ms: int | None = None) -> UpdateReport | None:
        """One round: read, join, and update when a batch is due (``force``: whatever is ready, at least one)."""
        self.poll(block_ms)
        _crash_point("read", self._crashes)
        now = self.clock()
        self.ready.extend(self._not_erased(self.joiner.ready(self._watermark(now))))
        self._flush_skips()
        if not self.ready:
            return None
        if now < self._retry_at:  # the last update failed: wait out its backoff
            return None
        due = len(self.ready) >= self.config.batch_size
        waited = now - self.ready[0].event.ts - self.config.label_delay_s >= self.config.update_interval_s
        if due or force or (waited and len(self.ready) >= self.config.min_batch):
            batch, self.ready = self.ready[: self.config.batch_size], self.ready[self.config.batch_size :]
            try:
                return self.update(batch)
            except redis.RedisError:
                raise  # Redis away: the run loop waits and re-reads everything pending
            except Exception as exc:  # noqa: BLE001  (one bad update must not stop the learner)
                self._update_failed(batch, exc)
                return None
            finally:
                self.stage = "idle"
        return None

    def run(self, *, max_updates: int | None = None, until: Callable[[], bool] | None = None, on_update: Callable[[UpdateReport], None] | None = None) -> None:
        """Rounds until ``max_updates`` updates were made or ``until()`` says stop (checked between rounds: a
        stop never cuts an update short). Nothing stops it but those: Redis away is waited out, and anything
        else that raises is logged, counted by kind and retried after a bounded backoff."""
        heartbeat = threading.Thread(target=self._heartbeat, name="learner-heartbeat", daemon=True)
        self._stopped = threading.Event()
        heartbeat.start()
        failures = 0
        try:
            while (max_updates is None or len(self.updates) < max_updates) and not (until and until()):
                try:
                    report = self.step()
                    self.stage = "guardrail"
                    self.guardrail()
                    self.stage = "idle"
                    failures = 0
                except redis.RedisError as exc:  # a Redis restart: wait, re-read what was pending, go on
                    log.warning("Redis unavailable (%s); retrying in 1 s", exc)
                    time.sleep(1.0)
                    self._restart_reading()
                    continue
                except Exception:  # noqa: BLE001  (outside an update: reading, joining, the guardrail)
                    failures += 1
                    wait_s = min(60.0, self.config.retry_backoff_s * 2 ** (failures - 1))
                    log.exception("learner round failed at %s; retrying in %.0f s", self.stage, wait_s)
                    self._count_error(self.stage)
                    self.stage = "idle"
                    time.sleep(wait_s)
                    self._restart_reading()
                    continue
                if report and on_update:
                    on_update(report)
        finally:
            self._stopped.set()
            heartbeat.join(timeout=5)
            try:
                self.client.hdel(self.status.heartbeats_key, self.config.consumer)
            except redis.RedisError:
                pass

    def _restart_reading(self) -> None:
        """Forget what is in memory and read this consumer's pending entries again (nothing was acknowledged)."""
        self.reader.restart()
        self.ready.clear()
        self.joiner = Joiner(self.config, self.values_of)

    def _heartbeat(self) -> None:
        """Says "running" in Redis every ``heartbeat_s`` from its own thread, also while a long update runs."""
        started = time.time()
        while not self._stopped.is_set():
            beat = {"at": time.time(), "started": started, "pid": os.getpid(), "host": socket.gethostname(), "stage": self.stage, "updates": len(self.updates)}
            try:
                self.client.hset(self.status.heartbeats_key, self.config.consumer, json.dumps(beat))
                self.reader.keep_claimed()  # entries held in memory stay this consumer's, however long an update takes
            except redis.RedisError:
                pass  # the main loop deals with Redis being away
            self._stopped.wait(self.config.heartbeat_s)

    # ------------------------------------------------------ failed updates (the rest: ranker.learning.failures)
    def _serving_policy_or_none(self) -> RankingPolicy | None:
        try:
            return RankingPolicy.load(self.registry.path_of(self.registry.current() or self.registry.ensure_current()))
        except redis.RedisError:
            raise
        except Exception:  # noqa: BLE001  (then no entry can be blamed alone; the attempt count decides)
            return None

    @staticmethod
    def _fails_alone(trajectory: Trajectory, serving: RankingPolicy | None) -> str | None:
        """What goes wrong when this one ranking is replayed and scored on its own, or None."""
        if serving is None or replayable(trajectory) is not None:
            return None
        try:
            log_probs_of(serving, replay([trajectory]))
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        return None

    def _flush_skips(self) -> None:
        if not self.joiner.done_entries:
            return
        streams = self._streams()
        pipe = self.client.pipeline(transaction=True)
        for stream, entry_id in self.joiner.done_entries:
            pipe.xack(streams[stream], self.config.group, entry_id)
        for reason, count in self.joiner.skipped.items():
            if count:
                pipe.hincrby(self.counts_key, reason, count)
        pipe.execute()
        self.joiner.done_entries.clear()
        self.joiner.skipped = {reason: 0 for reason in SKIP_REASONS}

    # -------------------------------------------------------------- update
    def update(self, batch: list[Trajectory]) -> UpdateReport | None:
        """One update from ``batch`` (module docstring, steps 4-6): the head, and every ``ppo_every``-th time a PPO
        fine-tune of the network, gated as it would serve, then committed with the batch's acknowledgements."""
        started = time.perf_counter()
        config = self.config
        batch_key = hashlib.sha256("\n".join(t.entry_id for t in batch).encode()).hexdigest()[:16]
        self.stage = "load"
        known = self.client.hget(self.decisions_key, batch_key)
        if known is not None:  # committed before a crash ate the acknowledgements
            self._commit(batch, batch_key, dict(json.loads(known), decision="replayed"), serving=None, stats=False)
            report = UpdateReport(json.loads(known)["version"], json.loads(known)["parent"], len(batch), "replayed", {}, {}, time.perf_counter() - started)
            self.updates.append(report)
            return report
        timings: dict[str, float] = {}
        clock = Stages(timings)
        serving_version = self.registry.current() or self.registry.ensure_current()
        usable_batch, skip_counts = [], {}
        for trajectory in batch:
            reason = replayable(trajectory)
            if reason:
                skip_counts[reason] = skip_counts.get(reason, 0) + 1
            else:
                usable_batch.append(trajectory)
        held = [bool(config.holdout_every) and index % config.holdout_every == config.holdout_every - 1 for index in range(len(usable_batch))]
        new_holdout = [t for t, out in zip(usable_batch, held) if out]
        train = [t for t, out in zip(usable_batch, held) if not out]
        windows = [(self.holdout_window, new_holdout), (self.replay_window, train)]
        working = self.working()
        if len(train) == 0:
            decision = {"version": None, "parent": serving_version, "decision": "nothing_to_learn", "skipped": skip_counts}
            self._commit(batch, batch_key, decision, serving=serving_version, working=working, skip_counts=skip_counts, windows=windows)
            return None
        base_version = self._base(working, serving_version)
        serving = RankingPolicy.load(self.registry.path_of(serving_version))
        base = serving if base_version == serving_version else RankingPolicy.load(self.registry.path_of(base_version), reuse=serving)
        seed = int(batch_key[:8], 16)
        newest = max(t.event.ts for t in batch)  # the windows' age limit and the head's forgetting count from the batch, not the clock
        clock.lap("load")
        self.stage = "replay"
        steps = replay(train, self.values_of)
        clock.lap("replay")
        self.stage = "head"
        weights = step_weights(train, steps.trajectory, config.user_cap)
        candidate, training = self._head_candidate(base, steps, weights, newest)
        clock.lap("head")
        ppo_due = bool(config.ppo_every) and (working or {}).get("since_ppo", 0) + 1 >= config.ppo_every
        self.stage = "holdout"
        holdout = capped_holdout(
            [t for t in self.holdout_window.load(self.events, exclude={t.entry_id for t in batch}) if replayable(t) is None] + new_holdout, int(config.user_cap)
        )
        clock.lap("holdout")
        world = self.catalog.sim_catalog if self.catalog is not None and gate_uses_live_catalog(config) else None
        counters = lambda sim_catalog: live_counter_settings(self.client, config.prefix, sim_catalog.item_ids)  # noqa: E731
        finetune = None
        if ppo_due:  # the slower cadence: PPO on the network, the head refitted on it, judged with the simulator guard too
            self.stage = "train"
            finetune = self._ppo_candidate(serving, train, batch, newest, seed)
            clock.lap("train")
            self.stage = "gate"
            finetune_verdict = gate(finetune[0], serving, holdout, config, seed=seed, simulate=True, world=world, counters=counters)
            clock.lap("gate_ppo")
            if finetune_verdict["passed"]:
                candidate, training = finetune[0], {**finetune[1], "instead_of": {"kind": training["kind"], "rows": training["rows"]}}
                verdict = finetune_verdict
            else:
                training["ppo_rejected"] = {"reasons": finetune_verdict["reasons"], "training": finetune[1]}
        if finetune is None or not finetune_verdict["passed"]:
            self.stage = "gate"
            verdict = gate(candidate, serving, holdout, config, seed=seed, simulate=False, held=self.holdout_inputs.held(candidate, holdout))
            if finetune is not None:  # what the PPO fine-tune this head update stands in for was judged by (the simulator guard's figures)
                verdict["finetune"] = {name: finetune_verdict.get(name) for name in ("passed", "deferred", "reasons", "notes", "simulator")}
            clock.lap("gate")
        version = f"ol-{batch_key}"
        training.update(
            {
                "trajectories": len(train),
                "held_out": len(holdout),
                "skipped": skip_counts,
                "serving": serving_version,
                "first_entry": batch[0].entry_id,
                "last_entry": batch[-1].entry_id,
                "batch_key": batch_key,
                "config": {name: value for name, value in asdict(config).items() if name not in ("consumer",)},
            }
        )
        self.stage = "save"
        candidate.save(
            self.registry.path_of(version), version=version, parent=base_version, training=training, evaluation={"gate": verdict}, objective=config.objective
        )
        if getattr(candidate, "optimiser_state", None):
            save_optimiser(candidate, self.registry.path_of(version))
        clock.lap("save")
        _crash_point("trained", self._crashes)
        feedback_ts = [stream_order(entry)[0] / 1000 for t in batch for entry in t.interaction_entries]
        outcome = "promoted" if verdict["passed"] else "deferred" if verdict.get("deferred") else "rejected"
        decision = {
            "version": version,
            "parent": base_version,
            "serving": serving_version,
            "decision": outcome,
            "kind": training["kind"],
            "reasons": verdict["reasons"],
            "notes": verdict.get("notes", []),
            "at": self.clock(),
            "batch": len(batch),
            "trained": len(train),
            "held_out": len(holdout),
            "seconds": time.perf_counter() - started,
            "stages_s": timings,
            "feedback": [min(feedback_ts), max(feedback_ts)] if feedback_ts else None,
        }
        self.stage = "commit"
        decision["decision"] = self._commit(
            batch,
            batch_key,
            decision,
            serving=serving_version,
            working=working,
            skip_counts=skip_counts,
            windows=windows,
            ppo_attempted=finetune is not None,
        )
        _crash_point("committed", self._crashes)
        self.stage = "prune"
        current_working = self.working()
        in_use = ExperimentStore(self.client, prefix=config.prefix).policies_in_use()  # experiments' arms stay on disk
        self.registry.prune(keep=config.keep_versions, also_keep=([current_working["version"]] if current_working else []) + sorted(in_use))
        report = UpdateReport(version, base_version, len(train), decision["decision"], verdict, training, time.perf_counter() - started)
        self.updates.append(report)
        log.info(
            "update %s (%s; parent %s, serving %s, %d trajectories): %s %s",
            version,
            training["kind"],
            base_version,
            serving_version,
            len(train),
            decision["decision"],
            "; ".join(verdict["reasons"] + verdict.get("notes", [])),
        )
        return report

    def _head_candidate(self, base: RankingPolicy, steps: Any, weights: Any, newest: float) -> tuple[RankingPolicy, dict[str, Any]]:
        """The base network with its head updated by the batch's shown items (:mod:`ranker.learning.head`). A head
        that cannot be solved (a singular update) is counted, and the candidate keeps the head it had."""
        settings = self.config.head_settings()
        head = base.head or fresh_head(base, settings)
        rows = head_rows(base, steps, weights)
        training: dict[str, Any] = {"kind": "online-head", "rows": len(rows.reward), "rows_not_finite": rows.dropped}
        if rows.dropped:
            self.client.hincrby(self.counts_key, "not_finite", rows.dropped)
        try:
            new_head = update_head(head, rows, newest_ts=newest, settings=settings)
        except HeadError as exc:
            log.warning("head update not solved, the head stays as it was: %s", exc)
            self._count_error("head_singular")
            training["head_error"] = str(exc)
            new_head = head
        training["head"] = new_head.summary()
        return RankingPolicy(net=base.net, manifest=dict(base.manifest), head=new_head), training

    def _ppo_candidate(
        self, serving: RankingPolicy, train: list[Trajectory], batch: list[Trajectory], newest: float, seed: int
    ) -> tuple[RankingPolicy, dict[str, Any]]:
        """PPO on the serving network (never on a rejected candidate's) over the batch and the replay window, then a
        head refitted on the new network from the same rankings, calibrated afresh."""
        config = self.config
        in_batch = {t.entry_id for t in batch}
        replayed = [
            t for t in self.replay_window.load(self.events, exclude=in_batch) if replayable(t) is None and t.event.ts >= newest - config.replay_max_age_s
        ]
        training_set = replayed + train
        steps = replay(training_set, self.values_of)
        weights = step_weights(training_set, steps.trajectory, config.user_cap)
        tuned, training = ppo_update(
            serving, steps, config, seed=seed, sample_weight=weights, optimiser_state=load_optimiser(self.registry.path_of(serving.version))
        )
        settings = self.config.head_settings()
        head = fresh_head(tuned, settings, examination=serving.head.examination if serving.head is not None else None)
        try:
            head = update_head(head, head_rows(tuned, steps, weights), newest_ts=newest, settings=settings)
        except HeadError as exc:
            training["head_error"] = str(exc)
        candidate = RankingPolicy(net=tuned.net, manifest={}, head=head)
        candidate.optimiser_state = tuned.optimiser_state
        training.update({"kind": "online-ppo", "replayed": len(replayed), "head": head.summary()})
        return candidate, training

    def working(self) -> dict[str, Any] | None:
        """The learner's own line of versions: it keeps training its latest candidate while the gate decides what serves."""
        raw = self.client.get(self.working_key)
        return json.loads(raw) if raw else None

    def _base(self, working: dict[str, Any] | None, serving_version: str) -> str:
        """Where the next update starts: the working version, unless the serving one moved under it
        (a rollback, a manual promote) or it was rejected too many times in a row."""
        if not working or working["serving"] != serving_version or working["rejections"] >= self.config.reset_after_rejections:
            return serving_version
        if not (self.registry.path_of(working["version"]) / "manifest.json").exists():
            return serving_version
        return working["version"]

    def _commit(
        self,
        batch: Sequence[Trajectory],
        batch_key: str,
        decision: dict[str, Any],
        *,
        serving: str | None,
        working: dict[str, Any] | None = None,
        skip_counts: dict[str, int] | None = None,
        stats: bool = True,
        windows: Sequence[tuple[TrajectoryWindow, Sequence[Trajectory]]] = (),
        ppo_attempted: bool = False,
    ) -> str:
        """Acknowledge the batch, record the decision, statistics and working line, add the batch to the replay and
        hold-out windows, promote: all or nothing."""
        streams = self._streams()
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.registry.current_key)
                    current = as_text(pipe.get(self.registry.current_key))
                    outcome = decision["decision"]
                    if outcome in ("promoted", "rejected", "deferred") and current != serving:
                        outcome = "superseded"  # someone promoted or rolled back meanwhile: the gate compared against another version
                    same_line = (working or {}).get("serving") == serving
                    since_ppo = 0 if ppo_attempted else (working or {}).get("since_ppo", 0) + 1
                    pipe.multi()
                    if outcome == "promoted":
                        pipe.lpush(self.registry.history_key, serving)
                        pipe.ltrim(self.registry.history_key, 0, self.config.history_len - 1)  # a version every few seconds: keep the newest
                        pipe.set(self.registry.current_key, decision["version"])
                        line = {"version": decision["version"], "serving": decision["version"], "rejections": 0, "since_ppo": since_ppo}
                        pipe.set(self.working_key, json.dumps(line))
                    elif outcome in ("rejected", "deferred"):
                        rejections = (working or {}).get("rejections", 0) if same_line else 0
                        line = {"version": decision["version"], "serving": serving, "rejections": rejections + (outcome == "rejected"), "since_ppo": since_ppo}
                        pipe.set(self.working_key, json.dumps(line))
                    elif outcome == "superseded":
                        pipe.delete(self.working_key)
                    if outcome != "replayed":
                        pipe.hset(self.decisions_key, batch_key, json.dumps(dict(decision, decision=outcome)))
                        if outcome in ("promoted", "rejected", "deferred", "superseded"):
                            pipe.set(self.status.last_key, json.dumps(dict(decision, decision=outcome, batch_key=batch_key)))
                        if outcome == "promoted":
                            pipe.set(self.status.last_promoted_key, json.dumps(dict(decision, decision=outcome, batch_key=batch_key)))
                    pipe.hdel(self.attempts_key, *[trajectory.entry_id for trajectory in batch])
                    for trajectory in batch:
                        pipe.xack(streams["rankings"], self.config.group, trajectory.entry_id)
                        for entry_id in trajectory.interaction_entries:
                            pipe.xack(streams["interactions"], self.config.group, entry_id)
                        if stats:
                            event = trajectory.event
                            queue_reward(
                                pipe, self.client, self.config.prefix, event.policy_version, event.user_key, trajectory.total_reward, self.config.user_cap
                            )
                    for reason, count in (skip_counts or {}).items():
                        pipe.hincrby(self.counts_key, reason, count)
                    for window, trajectories in windows:
                        window.queue(pipe, trajectories)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        # On a replicated Redis the commit counts once a replica holds it too: a failover before that may drop it,
        # and then the entries are pending again and train once more (NotReplicated: the run loop re-reads them).
        confirm_replicated(self.client, self.config.prefix, self.config.redis_replicas, self.config.redis_replica_timeout_ms)
        return outcome

    # ----------------------------------------------------------- guardrail
    def reward_stats(self, version: str) -> tuple[float, float, float]:
        return reward_stats(self.client, self.config.prefix, version)

    def guardrail(self) -> str | None:
        """Roll the serving version back when its live reward is significantly below its parent's (:func:`guardrail`)."""
        return guardrail(self.client, self.registry, self.config)

    def skipped_counts(self) -> dict[str, int]:
        return self.status.skipped()

    def decisions(self) -> dict[str, dict[str, Any]]:
        return self.status.decisions()
