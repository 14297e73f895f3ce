"""A/B experiments: definitions in Redis, sticky assignment, exposure logs and reports.

An experiment compares arms, each a policy version or the ``retrieval``
baseline (the retrieval order, no policy), in one of two modes:

- ``ab``: every user is assigned to one arm by a hash of (experiment salt,
  pseudonymised user) with the arms' weights (``ranker.experiments.assignment``): the same
  arm on every request and in every process, with nothing shared but the
  definition;
- ``interleave``: two arms; every ranking is a team-draft interleaving of the
  two policies' rankings (``ranker.experiments.interleaving``) and a click credits the
  team whose item it was.

Traffic: an experiment takes a ``traffic`` share of users. Experiments whose
traffic would overlap are refused, unless they declare the same ``layer``:
inside a layer users are hashed once (by the layer's name) and each
experiment owns its own range of buckets, so they never share a user.

Logs, all in Redis next to the event log (``ranker.live.events.ExperimentKeys``):
the exposure of each session (user, arm, time) is written in the ranking's own
transaction, with the user's purchases per ranking before their first
exposure (the pre-period covariate of CUPED); feedback's idempotent script
adds clicks, purchases and revenue per session (or per ranking and team).
:meth:`ExperimentStore.report` reads them back and hands them to
``ranker.experiments.stats`` (or ``analyse_interleaving``).

Definitions live in the hash ``{p}:experiments``; every change bumps
``{p}:experiments:rev``, which servers read with each request's policy
pointer and reload the definitions only when it moved.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import redis

from ranker.defaults import LOGS_TTL_S  # noqa: F401  (the defaults' one home; importers read them here too)
from ranker.errors import Kind, RequestError
from ranker.experiments.assignment import BUCKETS, arm_of, bucket
from ranker.experiments.interleaving import analyse_interleaving
from ranker.experiments.stats import METRICS, Sessions, analyse
from ranker.live.backend import as_text, key, queue_script
from ranker.live.events import ExperimentKeys
from ranker.live.state import activity_key

MODES = ("ab", "interleave")
RETRIEVAL_ARM = "retrieval"  # the baseline arm: candidates in retrieval order
PRIMARY_METRIC = "purchases_per_session"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WEIGHT_TOLERANCE = 1e-6

# KEYS: exposures hash, pre-period hash, the user's activity hash.
# ARGV: exposure field, exposure record, user key, when the logs expire (unix seconds; '' while open-ended).
# The first exposure wins (HSETNX); the user's pre-period value is taken once, before this ranking counts.
# Feedback copies the exposures' expiry to the outcome hashes (ranker.live.events).
_EXPOSE = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then
  local counts = redis.call('HMGET', KEYS[3], 'rankings', 'purchases')
  local rankings = tonumber(counts[1]) or 0
  local value = ''
  if rankings > 0 then value = tostring((tonumber(counts[2]) or 0) / rankings) end
  redis.call('HSET', KEYS[2], ARGV[3], value)
end
if ARGV[4] ~= '' then
  redis.call('EXPIREAT', KEYS[1], ARGV[4])
  redis.call('EXPIREAT', KEYS[2], ARGV[4])
end
return 1
"""


class ExperimentError(RequestError):
    """A definition that cannot run (``invalid``), an unknown experiment (``not_found``), or a conflicting change (``conflict``)."""


@dataclass
class Arm:
    name: str
    policy: str  # a policy version, or "retrieval"
    weight: float


@dataclass
class Experiment:
    experiment_id: str
    name: str
    mode: str
    arms: list[Arm]
    salt: str
    layer: str | None
    traffic: float
    buckets: tuple[int, int]  # the users this experiment owns: [low, high) of the layer's (or its own) hash space
    primary_metric: str
    guardrail_metrics: list[str]
    created_at: float
    start_at: float
    end_at: float | None = None
    stopped_at: float | None = None
    description: str = ""

    # ------------------------------------------------------------- state
    def status(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if self.stopped_at is not None or (self.end_at is not None and now >= self.end_at):
            return "stopped"
        return "scheduled" if now < self.start_at else "running"

    def ends(self) -> float:
        """When it stops taking traffic (infinity while open-ended)."""
        candidates = [t for t in (self.stopped_at, self.end_at) if t is not None]
        return min(candidates) if candidates else math.inf

    # -------------------------------------------------------- assignment
    @property
    def traffic_salt(self) -> str:
        return f"layer:{self.layer}" if self.layer else f"traffic:{self.salt}"

    def admits(self, unit: str) -> bool:
        low, high = self.buckets
        return low <= bucket(self.traffic_salt, unit) < high

    def arm_for(self, unit: str) -> int:
        return arm_of(self.salt, unit, [arm.weight for arm in self.arms])

    # ------------------------------------------------------------ storage
    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["buckets"] = list(self.buckets)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Experiment:
        data = dict(data)
        data["arms"] = [Arm(**arm) for arm in data["arms"]]
        data["buckets"] = tuple(data["buckets"])
        return cls(**data)

    def public(self, now: float | None = None) -> dict[str, Any]:
        """What the API shows: the definition and its status (the salt too: assignment is reproducible from it)."""
        return dict(self.to_json(), status=self.status(now))


@dataclass
class Assignment:
    """Where one ranking request falls: an experiment, its arm (A/B), and the analysis session."""

    experiment: Experiment
    arm: int | None
    session: str


def _fail(message: str, field: str, value: Any = None, kind: Kind = "invalid") -> None:
    raise ExperimentError(message, field=field, value=value, kind=kind)


def validate_arms(arms: Sequence[Arm], mode: str, known_versions: Sequence[str]) -> None:
    if mode not in MODES:
        _fail(f"mode: must be one of {', '.join(MODES)}, got {mode!r}", "mode", mode)
    if len(arms) < 2:
        _fail(f"arms: an experiment needs at least 2 arms, got {len(arms)}", "arms", len(arms))
    if mode == "interleave" and len(arms) != 2:
        _fail(f"arms: interleaving compares exactly 2 arms, got {len(arms)}", "arms", len(arms))
    names = set()
    for index, arm in enumerate(arms):
        if not NAME_PATTERN.fullmatch(arm.name):
            _fail(f"arms[{index}].name: {arm.name!r} must be 1-64 letters, digits, '.', '_' or '-'", f"arms[{index}].name", arm.name)
        if arm.name in names:
            _fail(f"arms[{index}].name: {arm.name!r} is used by two arms", f"arms[{index}].name", arm.name)
        names.add(arm.name)
        if arm.policy != RETRIEVAL_ARM and arm.policy not in known_versions:
            _fail(
                f"arms[{index}].policy: no policy version {arm.policy!r} (known: {', '.join(known_versions) or 'none'}, or {RETRIEVAL_ARM!r})",
                f"arms[{index}].policy",
                arm.policy,
            )
        if not (isinstance(arm.weight, (int, float)) and math.isfinite(arm.weight) and arm.weight > 0):
            _fail(f"arms[{index}].weight: must be a positive number, got {arm.weight!r}", f"arms[{index}].weight", arm.weight)
    total = sum(arm.weight for arm in arms)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        _fail(f"arms: the weights must sum to 1, they sum to {total:g}", "arms", total)


class ExperimentStore:
    """Experiments of one key prefix: create, list, get, stop; assignment for serving; reports."""

    def __init__(self, client: redis.Redis, *, prefix: str = "ranker", logs_ttl_s: int = LOGS_TTL_S):
        self.client = client
        self.prefix = prefix
        self.logs_ttl_s = logs_ttl_s
        self.definitions_key = key(prefix, "experiments")
        self.rev_key = key(prefix, "experiments", "rev")
        self._expose = client.register_script(_EXPOSE)
        self._lock = threading.Lock()
        self._rev: str | None = None
        self._live: list[Experiment] = []

    # ------------------------------------------------------------ admin
    def create(
        self,
        *,
        name: str,
        arms: Sequence[Arm],
        known_versions: Sequence[str],
        mode: str = "ab",
        layer: str | None = None,
        traffic: float = 1.0,
        primary_metric: str = PRIMARY_METRIC,
        guardrail_metrics: Sequence[str] = ("click_through",),
        start_at: float | None = None,
        end_at: float | None = None,
        description: str = "",
        experiment_id: str | None = None,
        now: float | None = None,
    ) -> Experiment:
        """Validate and store a new experiment; refuses one that would share users with another without a common layer."""
        now = time.time() if now is None else now
        arms = list(arms)
        validate_arms(arms, mode, known_versions)
        if not (isinstance(traffic, (int, float)) and 0 < traffic <= 1):
            _fail(f"traffic: the share of users must be in (0, 1], got {traffic!r}", "traffic", traffic)
        if layer is not None and not NAME_PATTERN.fullmatch(layer):
            _fail(f"layer: {layer!r} must be 1-64 letters, digits, '.', '_' or '-'", "layer", layer)
        for metric_field, metric in [("primary_metric", primary_metric)] + [(f"guardrail_metrics[{i}]", m) for i, m in enumerate(guardrail_metrics)]:
            if metric not in METRICS:
                _fail(f"{metric_field}: {metric!r} is not one of {', '.join(METRICS)}", metric_field, metric)
        start = now if start_at is None else float(start_at)
        if end_at is not None and end_at <= start:
            _fail(f"end_at: {end_at} is not after the start ({start})", "end_at", end_at)
        experiment_id = experiment_id or "exp-" + uuid.uuid4().hex[:12]
        if not NAME_PATTERN.fullmatch(experiment_id):
            _fail(f"experiment_id: {experiment_id!r} must be 1-64 letters, digits, '.', '_' or '-'", "experiment_id", experiment_id)
        width = max(1, round(traffic * BUCKETS))

        def define(pipe: Any) -> Experiment:
            if pipe.hexists(self.definitions_key, experiment_id):
                _fail(f"experiment_id: {experiment_id!r} exists already", "experiment_id", experiment_id, kind="conflict")
            others = [Experiment.from_json(json.loads(raw)) for raw in pipe.hvals(self.definitions_key)]
            low = self._place(others, layer, width, start, end_at)
            return Experiment(
                experiment_id=experiment_id,
                name=name,
                mode=mode,
                arms=arms,
                salt=uuid.uuid4().hex,
                layer=layer,
                traffic=float(traffic),
                buckets=(low, low + width),
                primary_metric=primary_metric,
                guardrail_metrics=list(guardrail_metrics),
                created_at=now,
                start_at=start,
                end_at=end_at,
                description=description,
            )

        return self._store(define)

    def _store(self, change: Callable[[Any], Experiment]) -> Experiment:
        """Write the experiment ``change`` builds from the definitions it reads, atomically (retried when another
        process changed them meanwhile), and bump the revision so every server reloads."""
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.definitions_key)
                    experiment = change(pipe)
                    pipe.multi()
                    pipe.hset(self.definitions_key, experiment.experiment_id, json.dumps(experiment.to_json()))
                    expires = self.logs_expire_at(experiment)
                    if expires is not None:  # stopped: what is logged already gets its expiry
                        for name in ExperimentKeys(self.prefix, experiment.experiment_id).all():
                            pipe.expireat(name, expires)
                    pipe.incr(self.rev_key)
                    pipe.execute()
                    return experiment
                except redis.WatchError:
                    continue

    @staticmethod
    def _place(others: Sequence[Experiment], layer: str | None, width: int, start: float, end: float | None) -> int:
        """The first bucket of a free range of ``width`` for a new experiment, or a 409 naming what it overlaps."""
        end = math.inf if end is None else end
        overlapping = [other for other in others if other.status() != "stopped" and other.start_at < end and start < other.ends()]
        taken = []
        for other in overlapping:
            if layer is None or other.layer != layer:
                hint = (
                    f"declare the same layer on both (its layer: {other.layer!r})"
                    if other.layer
                    else "declare a common layer on both to split users between them"
                )
                _fail(
                    f"layer: the experiment would share users with {other.experiment_id} ({other.name!r}, {other.status()}); {hint}",
                    "layer",
                    layer,
                    kind="conflict",
                )
            taken.append(other.buckets)
        low = 0
        for taken_low, taken_high in sorted(taken):
            if taken_low - low >= width:
                break
            low = max(low, taken_high)
        if low + width > BUCKETS:
            free = BUCKETS - sum(high - lo for lo, high in taken)
            _fail(
                f"traffic: layer {layer!r} has {free / BUCKETS:.2%} of users free in one range, not {width / BUCKETS:.2%}",
                "traffic",
                width / BUCKETS,
                kind="conflict",
            )
        return low

    def get(self, experiment_id: str) -> Experiment:
        raw = self.client.hget(self.definitions_key, experiment_id)
        if raw is None:
            _fail(f"experiment_id: no experiment {experiment_id!r}", "experiment_id", experiment_id, kind="not_found")
        return Experiment.from_json(json.loads(raw))

    def list(self) -> list[Experiment]:
        experiments = [Experiment.from_json(json.loads(raw)) for raw in self.client.hvals(self.definitions_key)]
        return sorted(experiments, key=lambda experiment: experiment.created_at)

    def stop(self, experiment_id: str, now: float | None = None) -> Experiment:
        now = time.time() if now is None else now

        def stopped(pipe: Any) -> Experiment:
            raw = pipe.hget(self.definitions_key, experiment_id)
            if raw is None:
                _fail(f"experiment_id: no experiment {experiment_id!r}", "experiment_id", experiment_id, kind="not_found")
            experiment = Experiment.from_json(json.loads(raw))
            if experiment.status(now) == "stopped":
                _fail(f"experiment_id: {experiment_id!r} is stopped already", "experiment_id", experiment_id, kind="conflict")
            experiment.stopped_at = now
            return experiment

        return self._store(stopped)

    def logs_expire_at(self, experiment: Experiment) -> int | None:
        """When the experiment's logs expire (unix seconds): ``logs_ttl_s`` after it ends; None while open-ended.
        The definition itself is kept (a few hundred bytes), so the experiment still lists."""
        ends = experiment.ends()
        return None if math.isinf(ends) else int(ends + self.logs_ttl_s)

    def policies_in_use(self) -> set[str]:
        """Policy versions that experiments not yet stopped serve (retention must keep them)."""
        return {arm.policy for experiment in self.list() if experiment.status() != "stopped" for arm in experiment.arms if arm.policy != RETRIEVAL_ARM}

    # ---------------------------------------------------------- serving
    def queue_rev(self, pipe: Any) -> None:
        pipe.get(self.rev_key)

    def refresh(self, rev: bytes | str | None) -> None:
        """Reload the definitions when ``rev`` (read with the request's other state) moved."""
        rev = as_text(rev) if rev is not None else ""
        if rev == self._rev:
            return
        with self._lock:
            if rev != self._rev:
                self._live = [experiment for experiment in self.list() if experiment.status() != "stopped"]
                self._rev = rev

    def assign(self, unit: str, user_key: str, session_id: str | None, ranking_id: str, now: float | None = None) -> Assignment | None:
        """The running experiment that admits ``unit`` (the user's keyed hash: stable) and the arm it gets, or None;
        the analysis session is named by the user's pseudonym ``user_key`` (what the logs may hold)."""
        now = time.time() if now is None else now
        for experiment in self._live:
            if experiment.status(now) == "running" and experiment.admits(unit):
                arm = experiment.arm_for(unit) if experiment.mode == "ab" else None
                return Assignment(experiment, arm, f"{user_key}:{session_id or ranking_id}")
        return None

    def queue_exposure(self, pipe: Any, assignment: Assignment, *, user_key: str, ranking_id: str, ts: float) -> None:
        """Log that ``assignment``'s session (or, interleaving, ranking) was exposed, in the ranking's transaction."""
        keys = ExperimentKeys(self.prefix, assignment.experiment.experiment_id)
        if assignment.arm is None:
            field_name, record = ranking_id, {"user": user_key, "ts": ts}
        else:
            field_name, record = assignment.session, {"user": user_key, "arm": assignment.arm, "ts": ts}
        expires = self.logs_expire_at(assignment.experiment)
        queue_script(
            pipe,
            self._expose,
            keys=[keys.exposures, keys.pre, activity_key(self.prefix, user_key)],
            args=[field_name, json.dumps(record), user_key, "" if expires is None else expires],
        )

    # ----------------------------------------------------------- reports
    def report(self, experiment_id: str, *, alpha: float = 0.05, mde: float = 0.10, seed: int = 0) -> dict[str, Any]:
        """The experiment's analysis (``ranker.experiments.stats``), from its exposure and outcome logs."""
        experiment = self.get(experiment_id)
        keys = ExperimentKeys(self.prefix, experiment_id)
        pipe = self.client.pipeline(transaction=False)
        for name in keys.all():
            pipe.hgetall(name)
        exposures, pre, clicks, purchases, revenue = [{as_text(k): as_text(v) for k, v in table.items()} for table in pipe.execute()]
        head = {"experiment": experiment.public(), "mode": experiment.mode, "generated_at": time.time()}
        records = {field_name: json.loads(raw) for field_name, raw in exposures.items()}
        users = {user: index for index, user in enumerate(sorted({record["user"] for record in records.values()}))}
        if experiment.mode == "interleave":
            ids = list(records)
            user = np.array([users[records[r]["user"]] for r in ids], dtype=np.int64)
            ts = np.array([records[r]["ts"] for r in ids], dtype=np.float64)
            credit = [np.array([float(clicks.get(f"{r}:{team}", 0)) for r in ids]) for team in (0, 1)]
            analysis = analyse_interleaving(user, credit[0], credit[1], ts, alpha=alpha, arm_names=[arm.name for arm in experiment.arms])
            return dict(head, interleaving=analysis)
        sessions = sessions_of(records, users, clicks, purchases, revenue, pre)
        analysis = analyse(
            sessions,
            [arm.name for arm in experiment.arms],
            [arm.weight for arm in experiment.arms],
            primary=experiment.primary_metric,
            alpha=alpha,
            mde=mde,
            seed=seed,
        )
        analysis["guardrails"] = guardrail_checks(analysis, experiment.guardrail_metrics)
        return dict(head, **analysis)


def sessions_of(
    records: dict[str, dict[str, Any]], users: dict[str, int], clicks: dict[str, str], purchases: dict[str, str], revenue: dict[str, str], pre: dict[str, str]
) -> Sessions:
    """The exposure and outcome logs of an A/B experiment as ``ranker.experiments.stats.Sessions``."""
    ids = list(records)
    pre_values = np.full(len(users), np.nan)
    for user, index in users.items():
        if pre.get(user):
            pre_values[index] = float(pre[user])
    column = lambda table: np.array([float(table.get(s, 0)) for s in ids], dtype=np.float64)  # noqa: E731
    return Sessions(
        arm=np.array([records[s]["arm"] for s in ids], dtype=np.int64),
        user=np.array([users[records[s]["user"]] for s in ids], dtype=np.int64),
        ts=np.array([records[s]["ts"] for s in ids], dtype=np.float64),
        clicks=column(clicks),
        purchases=column(purchases),
        revenue=column(revenue),
        pre=pre_values,
    )


def guardrail_checks(analysis: dict[str, Any], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Per guardrail metric and treatment arm: ``breached`` when the arm is significantly worse than control."""
    out = []
    for comparison in analysis.get("comparisons", []):
        if comparison["metric"] in metrics and comparison.get("test") != "two_proportion_z":
            difference = comparison.get("difference")
            breached = bool(comparison.get("significant")) and difference is not None and difference < 0
            out.append(
                {
                    "metric": comparison["metric"],
                    "arm": comparison["arm"],
                    "difference": difference,
                    "p_value_adjusted": comparison.get("p_value_adjusted"),
                    "breached": breached,
                }
            )
    return out


def _number(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def summarise(report: dict[str, Any]) -> str:
    """A report as text for the terminal: arms, tests against control, sequential, Bayesian, SRM, guardrails."""
    experiment = report["experiment"]
    lines = [f"{experiment['experiment_id']} ({experiment['name']}): {experiment['mode']}, {experiment['status']}"]
    if report["mode"] == "interleave":
        result = report["interleaving"]
        arms = result["arm_names"]
        lines.append(
            f"  {result['n_impressions']} impressions, {result['n_users']} users: users preferring {arms[0]} {result['wins_a']}, "
            f"{arms[1]} {result['wins_b']}, ties {result['ties']}"
        )
        lines.append(
            f"  delta_AB {_number(result['delta_ab'], '+.4f')} [{_number(result['ci_low'], '+.4f')}, {_number(result['ci_high'], '+.4f')}], "
            f"sign test p = {_number(result['p_value'])}; preferred: {result['preferred'] or 'no significant preference'}"
        )
        return "\n".join(lines)
    primary = report["primary"]
    lines.append(f"  {report['n_users']} users, {report['n_sessions']} sessions; primary metric {primary}, alpha {report['alpha']}")
    for arm in report["arms"]:
        metrics = "  ".join(
            f"{name} {_number(value['value'])} [{_number(value['ci_low'])}, {_number(value['ci_high'])}]" for name, value in arm["metrics"].items()
        )
        lines.append(f"  {arm['name']:<12} users {arm['users']:>6} sessions {arm['sessions']:>6}  {metrics}")
    for comparison in report["comparisons"]:
        if comparison["metric"] == primary:
            lines.append(
                f"  {comparison['arm']} vs {report['control']} ({comparison['test']}): {_number(comparison['difference'], '+.4f')} "
                f"({_number(comparison['relative_difference'], '+.1%')}), 95% CI [{_number(comparison['ci_low'], '+.4f')}, {_number(comparison['ci_high'], '+.4f')}], "
                f"p = {_number(comparison['p_value'])}, Holm p = {_number(comparison['p_value_adjusted'])}{' SIGNIFICANT' if comparison['significant'] else ''}"
            )
    for arm in report["sequential"]["arms"]:
        lines.append(f"  sequential (mSPRT, valid at any peek) {arm['arm']}: p = {_number(arm['p_value'])}{' SIGNIFICANT' if arm['significant'] else ''}")
    if report.get("cuped"):
        for comparison in report["cuped"]["comparisons"]:
            lines.append(
                f"  CUPED {comparison['arm']}: {_number(comparison['difference'], '+.4f')} [{_number(comparison['ci_low'], '+.4f')}, "
                f"{_number(comparison['ci_high'], '+.4f')}], p = {_number(comparison['p_value'])}, variance reduction {_number(comparison['variance_reduction'], '.1%')}"
            )
    bayes = report["bayesian"]
    lines.append(
        f"  Bayesian ({bayes['metric']}): " + ", ".join(f"{arm['arm']} P(best) {arm['prob_best']:.3f} loss {arm['expected_loss']:.5f}" for arm in bayes["arms"])
    )
    srm = report["srm"]
    lines.append(
        f"  sample ratio: observed {srm['observed']}, expected {[round(x) for x in srm['expected']]}, p = {_number(srm['p_value'])}"
        f"{' MISMATCH: do not trust this experiment' if srm['flagged'] else ' (ok)'}"
    )
    for check in report.get("guardrails", []):
        lines.append(f"  guardrail {check['metric']} {check['arm']}: {'BREACHED' if check['breached'] else 'ok'} ({_number(check['difference'], '+.4f')})")
    return "\n".join(lines)
