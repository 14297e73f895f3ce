"""Experiments: definitions and their errors, sticky assignment, exposure and outcome logs, reports, the HTTP API,
the CLI, and one simulated A/B test between two real policy versions through a running HTTP server."""

from __future__ import annotations

import collections
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from redis_cluster import ON_CLUSTER_TOO
from werkzeug.serving import make_server

from api import create_app
from ranker.cli import main as cli
from ranker.client import ApiClient
from ranker.experiments.store import Arm, ExperimentError, ExperimentStore, summarise
from ranker.harness import Shopper, session_through
from ranker.live.backend import connect
from ranker.live.events import EventLog, ExperimentKeys
from ranker.live.registry import STARTING_POLICY
from ranker.ranking.policy import RankingPolicy

VERSIONS = ["v-start", "v-other"]


@pytest.fixture()
def store(backend_url, prefix):
    return ExperimentStore(connect(backend_url, socket_timeout=5), prefix=prefix)


def arms(*specs):
    return [Arm(name, policy, weight) for name, policy, weight in specs]


def create(store, **overrides):
    fields = {"name": "test", "arms": arms(("control", "v-start", 0.5), ("treatment", "v-other", 0.5)), "known_versions": VERSIONS}
    fields.update(overrides)
    return store.create(**fields)


def failure(call, kind):
    with pytest.raises(ExperimentError) as caught:
        call()
    assert caught.value.kind == kind, str(caught.value)
    return caught.value


# ------------------------------------------------------------ definitions
@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"arms": arms(("a", "v-start", 0.5), ("b", "v-other", 0.4))}, "arms"),
        ({"arms": arms(("a", "v-start", 0.5), ("b", "v-missing", 0.5))}, "arms[1].policy"),
        ({"arms": arms(("a", "v-start", 1.0))}, "arms"),
        ({"arms": arms(("a", "v-start", 0.5), ("a", "v-other", 0.5))}, "arms[1].name"),
        ({"arms": arms(("a", "v-start", 0.4), ("b", "v-other", 0.3), ("c", "retrieval", 0.3)), "mode": "interleave"}, "arms"),
        ({"traffic": 0.0}, "traffic"),
        ({"primary_metric": "dwell_time"}, "primary_metric"),
        ({"start_at": 100.0, "end_at": 50.0}, "end_at"),
    ],
)
def test_bad_definitions_are_422_naming_the_field_and_store_nothing(store, overrides, field):
    error = failure(lambda: create(store, **overrides), "invalid")
    assert error.field == field and field.split("[")[0] in str(error)
    assert store.list() == []


@ON_CLUSTER_TOO
def test_overlapping_experiments_need_a_common_layer_which_splits_its_users(store):
    first = create(store)
    error = failure(lambda: create(store), "conflict")
    assert error.field == "layer" and first.experiment_id in str(error)
    store.stop(first.experiment_id)
    a = create(store, layer="search", traffic=0.5)
    b = create(store, layer="search", traffic=0.5)
    assert a.buckets == (0, 5000) and b.buckets == (5000, 10000)
    assert failure(lambda: create(store, layer="search", traffic=0.1), "conflict").field == "traffic"
    assert failure(lambda: create(store, layer="other"), "conflict").field == "layer"
    users = [f"user-{i}" for i in range(4000)]
    in_a = {u for u in users if a.admits(u)}
    in_b = {u for u in users if b.admits(u)}
    assert not in_a & in_b and abs(len(in_a) - 2000) < 150 and abs(len(in_b) - 2000) < 150


@ON_CLUSTER_TOO
def test_stop_twice_is_409_unknown_is_404_and_a_scheduled_one_takes_no_traffic(store):
    experiment = create(store, start_at=4_000_000_000.0)
    assert experiment.status() == "scheduled"
    store.refresh(b"new")
    assert store.assign("someone", "token", None, "r1") is None
    assert store.stop(experiment.experiment_id).status() == "stopped"
    assert failure(lambda: store.stop(experiment.experiment_id), "conflict").field == "experiment_id"
    assert failure(lambda: store.get("exp-none"), "not_found").field == "experiment_id"
    assert failure(lambda: store.stop("exp-none"), "not_found").field == "experiment_id"


@ON_CLUSTER_TOO
def test_assignment_is_sticky_across_processes_and_follows_the_weights(backend_url, prefix):
    one = ExperimentStore(connect(backend_url, socket_timeout=5), prefix=prefix)
    other = ExperimentStore(connect(backend_url, socket_timeout=5), prefix=prefix)  # another server process
    experiment = create(one, arms=arms(("control", "v-start", 0.2), ("treatment", "v-other", 0.8)))
    for store in (one, other):
        store.refresh(store.client.get(store.rev_key))
    seen = collections.Counter()
    for index in range(3000):
        user = f"user-{index}"
        first = one.assign(user, "token", "s1", "r1")
        assert first is not None and first.experiment.experiment_id == experiment.experiment_id
        assert other.assign(user, "token", "s2", "r2").arm == first.arm == one.assign(user, "token", None, "r3").arm
        seen[first.arm] += 1
    assert abs(seen[0] / 3000 - 0.2) < 0.03


# -------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def engine(demo_engine_of):
    return demo_engine_of(80)


def save_reversed(policies_dir: Path, version: str) -> None:
    """A real, visibly different policy version: the starting policy with every weight negated."""
    policy = RankingPolicy.load(STARTING_POLICY)
    with torch.no_grad():
        for parameter in policy.net.parameters():
            parameter.mul_(-1.0)
    policy.save(policies_dir / version, version=version, parent=policy.version)


@pytest.fixture()
def app(backend_url, prefix, tmp_path, engine):
    app = create_app(
        {
            "TESTING": True,
            "DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": backend_url,
            "PREFIX": prefix,
            "ENGINE": engine,
            "SEED": 0,
            "USER_KEY_SECRET": "secret",
            "COLD_BONUS": 0.0,  # the logging policy is the serving policy, so its estimate is its logged value
        }
    )
    save_reversed(tmp_path / "data" / "policies", "v-reversed")
    return app


def start_version(client) -> str:
    return client.get("/v1/policies").get_json()["current"]


def rank(client, user, text="travel bag", **extra):
    response = client.post("/v1/rank", json={"user_id": user, "query": {"text": text}, **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def error_of(response, status):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    return response.get_json()["error"]


def test_the_api_creates_lists_gets_stops_and_refuses_bad_experiments(app):
    client = app.test_client()
    start = start_version(client)
    body = {
        "name": "reversed vs start",
        "arms": [{"name": "control", "policy": start, "weight": 0.5}, {"name": "reversed", "policy": "v-reversed", "weight": 0.5}],
    }
    bad_split = dict(body, arms=[dict(body["arms"][0], weight=0.5), dict(body["arms"][1], weight=0.6)])
    assert error_of(client.post("/v1/experiments", json=bad_split), 422)["field"] == "arms"
    unknown = dict(body, arms=[body["arms"][0], dict(body["arms"][1], policy="v-nope")])
    error = error_of(client.post("/v1/experiments", json=unknown), 422)
    assert error["field"] == "arms[1].policy" and "v-nope" in error["message"]
    assert error_of(client.post("/v1/experiments", json=dict(body, arms=body["arms"][:1])), 422)["field"] == "arms"
    created = client.post("/v1/experiments", json=dict(body, experiment_id="exp-one"))
    assert created.status_code == 201 and created.get_json()["status"] == "running"
    assert error_of(client.post("/v1/experiments", json=body), 409)["field"] == "layer"
    assert error_of(client.post("/v1/experiments", json=dict(body, experiment_id="exp-one")), 409)["field"] == "experiment_id"
    assert [e["experiment_id"] for e in client.get("/v1/experiments").get_json()["experiments"]] == ["exp-one"]
    assert client.get("/v1/experiments/exp-one").get_json()["arms"][1]["policy"] == "v-reversed"
    assert error_of(client.get("/v1/experiments/exp-none"), 404)["field"] == "experiment_id"
    assert client.post("/v1/experiments/exp-one/stop", content_type="application/json").get_json()["status"] == "stopped"
    assert error_of(client.post("/v1/experiments/exp-one/stop", content_type="application/json"), 409)["field"] == "experiment_id"
    assert error_of(client.get("/v1/experiments/exp-none/report"), 404)["field"] == "experiment_id"
    assert rank(client, "alice")["experiment"] is None  # stopped: no more traffic


@ON_CLUSTER_TOO
def test_ranking_in_an_experiment_serves_the_arm_logs_the_exposure_and_credits_feedback(app, backend_url, prefix):
    client = app.test_client()
    start = start_version(client)
    client.post(
        "/v1/experiments",
        json={
            "experiment_id": "exp-ab",
            "name": "baseline",
            "arms": [{"name": "policy", "policy": start, "weight": 0.5}, {"name": "retrieval", "policy": "retrieval", "weight": 0.5}],
        },
    )
    served = {}
    for index in range(40):
        user = f"user-{index}"
        first, again = rank(client, user), rank(client, user, session_id="later")
        assert first["experiment"]["experiment_id"] == "exp-ab" and first["experiment"]["arm"] == again["experiment"]["arm"]
        served[first["experiment"]["arm"]] = first
    assert set(served) == {"policy", "retrieval"}
    baseline = served["retrieval"]
    assert baseline["policy_version"] == "retrieval"
    scores = [item["retrieval_score"] for item in baseline["items"]]
    assert scores == sorted(scores, reverse=True)  # the baseline arm is the retrieval order
    assert served["policy"]["policy_version"] == start
    # outcomes land in the session's arm, once, with the item's price as revenue
    ranking = served["policy"]
    item = ranking["items"][0]
    events = [{"event_id": "e1", "item_id": item["item_id"], "type": "click"}, {"event_id": "e2", "item_id": item["item_id"], "type": "purchase"}]
    for _ in range(2):
        assert client.post("/v1/feedback", json={"ranking_id": ranking["ranking_id"], "events": events}).status_code == 202
    keys = ExperimentKeys(prefix, "exp-ab")
    r = connect(backend_url, socket_timeout=5)
    assert sum(float(v) for v in r.hvals(keys.purchases)) == 1
    assert sum(float(v) for v in r.hvals(keys.revenue)) == pytest.approx(item["price"])
    assert r.hlen(keys.exposures) == 80  # 40 users x 2 sessions
    logged = [event for _, event in EventLog(r, prefix=prefix).rankings()]
    assert {(event.experiment, event.arm) for event in logged} == {("exp-ab", "policy"), ("exp-ab", "retrieval")}
    report = client.get("/v1/experiments/exp-ab/report").get_json()
    assert report["n_users"] == 40 and report["n_sessions"] == 80
    arm = next(a for a in report["arms"] if a["name"] == "policy")
    assert arm["metrics"]["purchases_per_session"]["value"] == pytest.approx(1 / arm["sessions"])
    assert {"comparisons", "sequential", "bayesian", "srm", "over_time", "guardrails"} <= set(report)
    exposition = client.get("/metrics").get_data(as_text=True)
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("ranker_experiment_rankings_total{") and 'experiment="exp-ab"' in line
    )
    assert served == 80


@ON_CLUSTER_TOO
def test_an_experiments_logs_expire_after_it_ends_while_its_definition_stays(app, backend_url, prefix):
    client = app.test_client()
    r = connect(backend_url, socket_timeout=5)
    ttl = app.extensions["ranking_service"].experiments.logs_ttl_s
    arms_of = lambda start: [{"name": "a", "policy": start, "weight": 0.5}, {"name": "b", "policy": "retrieval", "weight": 0.5}]  # noqa: E731
    client.post("/v1/experiments", json={"experiment_id": "exp-open", "name": "open-ended", "arms": arms_of(start_version(client))})
    keys = ExperimentKeys(prefix, "exp-open")
    served = [rank(client, f"user-{index}") for index in range(6)]
    click = lambda ranking, kind="click": client.post(
        "/v1/feedback",
        json={
            "ranking_id": ranking["ranking_id"],
            "events": [  # noqa: E731
                {"item_id": ranking["items"][0]["item_id"], "type": kind}
            ],
        },
    )
    click(served[0])
    assert r.ttl(keys.exposures) == -1 and r.ttl(keys.clicks) == -1  # running with no end: kept while it runs
    assert client.post("/v1/experiments/exp-open/stop", content_type="application/json").status_code == 200
    for name in (keys.exposures, keys.pre, keys.clicks):
        assert ttl - 60 < r.ttl(name) <= ttl, name
    click(served[1], "purchase")  # feedback on a ranking served before the stop: new outcome logs expire with the rest
    assert ttl - 60 < r.ttl(keys.purchases) <= ttl and ttl - 60 < r.ttl(keys.revenue) <= ttl
    assert client.get("/v1/experiments/exp-open").get_json()["status"] == "stopped"
    # one with an end: its logs expire that long after the end from the first exposure on
    end_at = time.time() + 3600
    client.post("/v1/experiments", json={"experiment_id": "exp-ends", "name": "ends", "arms": arms_of(start_version(client)), "end_at": end_at})
    ranking = rank(client, "user-0")
    assert ranking["experiment"]["experiment_id"] == "exp-ends"
    click(ranking)
    expected = end_at + ttl - time.time()
    for name in (ExperimentKeys(prefix, "exp-ends").exposures, ExperimentKeys(prefix, "exp-ends").clicks):
        assert expected - 60 < r.ttl(name) <= expected + 1, name


def test_the_pre_period_covariate_is_what_the_user_did_before_the_first_exposure(app, backend_url, prefix):
    client = app.test_client()
    for _ in range(3):  # before the experiment: 4 rankings, one purchase
        rank(client, "bob")
    before = rank(client, "bob")
    client.post("/v1/feedback", json={"ranking_id": before["ranking_id"], "events": [{"item_id": before["items"][0]["item_id"], "type": "purchase"}]})
    client.post(
        "/v1/experiments",
        json={
            "experiment_id": "exp-pre",
            "name": "pre",
            "arms": [{"name": "a", "policy": start_version(client), "weight": 0.5}, {"name": "b", "policy": "retrieval", "weight": 0.5}],
        },
    )
    rank(client, "bob")
    rank(client, "carol")  # new: no pre-period data
    pre = connect(backend_url, socket_timeout=5).hgetall(ExperimentKeys(prefix, "exp-pre").pre)
    assert sorted(float(v) for v in pre.values() if v) == [0.25] and len(pre) == 2


def test_interleaving_mixes_both_rankings_and_credits_clicks_to_the_team(app):
    client = app.test_client()
    start = start_version(client)
    client.post(
        "/v1/experiments",
        json={
            "experiment_id": "exp-il",
            "name": "il",
            "mode": "interleave",
            "arms": [{"name": "start", "policy": start, "weight": 0.5}, {"name": "reversed", "policy": "v-reversed", "weight": 0.5}],
        },
    )
    body = rank(client, "dora")
    teams = body["experiment"]["teams"]
    assert body["experiment"]["mode"] == "interleave" and set(teams) == {"start", "reversed"} and len(teams) == len(body["items"])
    assert abs(teams.count("start") - teams.count("reversed")) <= 1
    assert len({item["item_id"] for item in body["items"]}) == len(body["items"])
    clicked = [item for item, team in zip(body["items"], teams) if team == "start"][:2]
    client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": [{"item_id": item["item_id"], "type": "click"} for item in clicked]})
    report = client.get("/v1/experiments/exp-il/report").get_json()
    result = report["interleaving"]
    assert report["mode"] == "interleave" and result["arm_names"] == ["start", "reversed"]
    assert result["wins_a"] == 1 and result["wins_b"] == 0 and result["n_impressions"] == 1
    assert "users preferring start 1" in summarise(report)
    # no one policy placed an interleaved slate: explain gives the modality split only, no group contributions
    explained = rank(client, "dora", explain=True)["items"]
    assert all(set(item["explain"]) == {"text_similarity", "image_similarity", "policy_adjustment"} for item in explained)


def test_a_missing_arm_policy_serves_outside_the_experiment(app, tmp_path):
    client = app.test_client()
    start = start_version(client)
    client.post(
        "/v1/experiments",
        json={
            "experiment_id": "exp-gone",
            "name": "gone",
            "arms": [{"name": "a", "policy": start, "weight": 0.5}, {"name": "b", "policy": "v-reversed", "weight": 0.5}],
        },
    )
    shutil.rmtree(tmp_path / "data" / "policies" / "v-reversed")
    arms_seen = {(body["experiment"] or {}).get("arm") for body in (rank(client, f"u{i}") for i in range(20))}
    assert arms_seen == {"a", None}  # arm b's users get the serving policy, unlogged in the experiment


# ---------------------------------------------- a simulated experiment over HTTP
@pytest.fixture()
def live_server(embedded_redis, prefix, tmp_path, demo_engine):
    app = create_app(
        {"DATA_DIR": str(tmp_path / "data"), "REDIS_URL": embedded_redis, "PREFIX": prefix, "ENGINE": demo_engine, "SEED": 0, "USER_KEY_SECRET": "secret"}
    )
    save_reversed(tmp_path / "data" / "policies", "v-reversed")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_simulated_ab_test_between_two_policy_versions_runs_through_http_and_reports(live_server, sim_catalog, tmp_path):
    runner = CliRunner()
    client = ApiClient(live_server)
    start = client.get("/v1/policies")["current"]
    created = runner.invoke(
        cli,
        ["ab", "create", "--name", "start vs reversed", "--arm", f"control={start}", "--arm", "reversed=v-reversed", "--id", "exp-sim", "--url", live_server],
    )
    assert created.exit_code == 0, created.output
    assert "exp-sim" in runner.invoke(cli, ["ab", "list", "--url", live_server]).output
    shopper = Shopper(sim_catalog, seed=3)
    rewards = collections.defaultdict(list)
    for _ in range(300):
        reward, body, _ = session_through(client, shopper, shopper.reset())
        rewards[body["experiment"]["arm"]].append(reward)
    assert set(rewards) == {"control", "reversed"}
    assert np.mean(rewards["control"]) > np.mean(rewards["reversed"])  # the simulator agrees the reversed policy is worse
    out = tmp_path / "report"
    reported = runner.invoke(cli, ["ab", "report", "exp-sim", "--out", str(out), "--url", live_server])
    assert reported.exit_code == 0, reported.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_sessions"] == 300 and not report["srm"]["flagged"]
    click_through = next(c for c in report["comparisons"] if c["metric"] == "click_through" and c["test"] == "welch_t")
    assert click_through["difference"] < 0 and click_through["significant"]  # reversed loses clicks, detectably
    assert any(g["metric"] == "click_through" and g["breached"] for g in report["guardrails"])
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 2 and all(path.stat().st_size > 5000 for path in pngs)
    assert "reversed vs control" in reported.output
    stopped = runner.invoke(cli, ["ab", "stop", "exp-sim", "--url", live_server])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    again = runner.invoke(cli, ["ab", "stop", "exp-sim", "--url", live_server])
    assert again.exit_code != 0 and "409" in again.output and "stopped already" in again.output


# -------------------------------------------------------- off-policy preview
def test_off_policy_preview_from_logged_rankings(app, backend_url, prefix):
    from ranker.learning.preview import estimate, logged_trajectories

    client = app.test_client()
    rng = np.random.default_rng(0)
    for index in range(60):
        body = rank(client, f"user-{index % 20}", text=["travel bag", "reading light", "shoes"][index % 3])
        clicked = [item for item in body["items"] if rng.random() < 0.3 / (1 + item["position"])]
        if clicked:
            client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": [{"item_id": item["item_id"], "type": "click"} for item in clicked]})
    rank(client, "greedy-user", greedy=True)  # no propensities: cannot be used
    events = EventLog(connect(backend_url, socket_timeout=5), prefix=prefix)
    waiting, skipped = logged_trajectories(events, rankings=100)
    assert waiting == [] and skipped["waiting"] == 61  # inside the label delay nothing is final yet
    trajectories, skipped = logged_trajectories(events, rankings=100, now=4_000_000_000.0)
    assert len(trajectories) == 60 and skipped["no_propensity"] == 1
    serving = app.extensions["ranking_service"].registry.load(start_version(client))
    same = estimate(serving, trajectories, resamples=200)
    assert same["estimators"]["ips"]["value"] == pytest.approx(same["logged_value"], rel=1e-4)
    assert same["estimators"]["snips"]["value"] == pytest.approx(same["logged_value"], rel=1e-4)
    assert same["effective_sample_size"] == pytest.approx(60, rel=1e-3)
    low, high = same["estimators"]["dr"]["ci95"]
    assert low <= same["logged_value"] <= high
    reversed_policy = app.extensions["ranking_service"].registry.load("v-reversed")
    other = estimate(reversed_policy, trajectories, resamples=200)
    assert other["effective_sample_size"] < 10  # acts unlike the logging policy: the logs say little about it
    assert other["estimators"]["snips"]["value"] != pytest.approx(same["logged_value"])
    response = client.get("/v1/policies/v-reversed/estimate?rankings=50&resamples=100").get_json()
    assert response["version"] == "v-reversed" and response["skipped"]["waiting"] == 50
    assert error_of(client.get("/v1/policies/v-none/estimate"), 404)["field"] == "version"
    assert error_of(client.get("/v1/policies/v-reversed/estimate?rankings=1"), 422)["field"] == "rankings"
