"""Secure by default, a server that always starts, and erasure that reaches every copy (issue 30)."""

from __future__ import annotations

import logging

import pytest
import redis
from click.testing import CliRunner

from api.security import InsecureBind, refuse_open_bind
from ranker.cli import main
from ranker.config import load_settings
from ranker.learning.supervisor import LearnerSupervisor, MaintenanceSupervisor
from ranker.live.backend import key
from ranker.live.registry import STARTING_POLICY
from ranker.ranking.policy import RankingPolicy

JSON = "application/json"


def rank(client, user="alice", headers=None, **extra):
    response = client.post("/v1/rank", json={"user_id": user, "query": {"text": "travel bag"}, "num_results": 5, **extra}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# ------------------------------------------------------------ binding and secrets
def test_serving_beyond_loopback_without_keys_is_refused_with_how_to_set_them(tmp_path, monkeypatch, caplog):
    for name in ("RANKER_API_KEY", "RANKER_INGEST_KEY", "RANKER_ADMIN_KEY", "RANKER_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path), "--no-learn"])
    assert result.exit_code == 2 and "RANKER_INGEST_KEY" in result.output and "--insecure" in result.output, result.output
    with pytest.raises(InsecureBind):
        refuse_open_bind("0.0.0.0", load_settings())  # the gunicorn master's check (api/gunicorn_conf.py)
    with pytest.raises(InsecureBind):
        refuse_open_bind("::", load_settings(admin_key="a"))  # both keys are needed
    refuse_open_bind("127.0.0.1", load_settings())
    refuse_open_bind("[::1]", load_settings())
    refuse_open_bind("0.0.0.0", load_settings(ingest_key="i", admin_key="a"))
    refuse_open_bind("0.0.0.0", load_settings(api_key="both"))
    with caplog.at_level(logging.WARNING):
        refuse_open_bind("0.0.0.0", load_settings(), insecure=True)
    assert "without RANKER_INGEST_KEY and RANKER_ADMIN_KEY" in caplog.text


def test_secrets_never_go_on_a_command_line(tmp_path):
    runner = CliRunner()
    refused = runner.invoke(main, ["serve", "--api-key", "k", "--data-dir", str(tmp_path)])
    assert refused.exit_code == 2 and "RANKER_INGEST_KEY" in refused.output
    for command in (["learn", "--data-dir", str(tmp_path)], ["serve", "--data-dir", str(tmp_path)], ["maintain", "--data-dir", str(tmp_path)]):
        result = runner.invoke(main, [*command, "--redis-url", "redis://:hunter2@10.0.0.1:6379/0"])
        assert result.exit_code == 2 and "REDIS_URL" in result.output and "hunter2" not in result.output


def test_the_supervisor_passes_the_redis_url_in_the_environment_and_a_stable_consumer(tmp_path, embedded_redis):
    url = "redis://:hunter2@127.0.0.1:1/0"
    one = LearnerSupervisor(redis.Redis.from_url(embedded_redis), tmp_path / "data", url, prefix="p")
    two = LearnerSupervisor(redis.Redis.from_url(embedded_redis), tmp_path / "data", url, prefix="p")
    assert "hunter2" not in " ".join(one.command) and one.redis_url == url
    assert one.command[one.command.index("--consumer") + 1] == two.consumer  # a restarted server's learner resumes the same entries
    assert LearnerSupervisor(redis.Redis.from_url(embedded_redis), tmp_path / "other", url).consumer != one.consumer
    maintenance = MaintenanceSupervisor(redis.Redis.from_url(embedded_redis), tmp_path / "data", url, prefix="p")
    assert "hunter2" not in " ".join(maintenance.command) and maintenance.redis_url == url  # the maintenance worker likewise


def test_secrets_come_from_files(tmp_path):
    (tmp_path / "ingest").write_text("ingest-secret\n")
    (tmp_path / "url").write_text("redis://:pw@host:6379/0\n")
    settings = load_settings(ingest_key_file=tmp_path / "ingest", redis_url_file=tmp_path / "url")
    assert settings.ingest_key == "ingest-secret" and settings.redis_url == "redis://:pw@host:6379/0"


# ------------------------------------------------------------ two keys
def test_the_ingest_key_ranks_and_sends_feedback_but_cannot_administer(make_app):
    client = make_app(INGEST_KEY="ingest", ADMIN_KEY="admin").test_client()
    ingest, admin = {"X-API-Key": "ingest"}, {"X-API-Key": "admin"}
    assert client.post("/v1/rank", json={"user_id": "u", "query": {"text": "mug"}}).status_code == 401
    body = rank(client, headers=ingest)
    event = {"ranking_id": body["ranking_id"], "events": [{"item_id": body["items"][0]["item_id"], "type": "click"}]}
    assert client.post("/v1/feedback", json=event, headers=ingest).status_code == 202
    for method, url in (("post", "/v1/policies/rollback"), ("delete", "/v1/users/u"), ("put", "/v1/items/k1"), ("post", "/v1/experiments")):
        response = getattr(client, method)(url, json={}, headers=ingest)
        assert response.status_code == 401 and "admin key" in response.get_json()["error"]["message"], (url, response.get_json())
    assert client.delete("/v1/users/u", headers=admin).status_code == 200
    rank(client, headers=admin)  # the admin key opens the ingest endpoints too (the console's one box)


# ------------------------------------------------------------ forged posts and rebinding
def test_a_keyless_server_refuses_posts_a_web_page_could_forge(make_app, tmp_path):
    app = make_app()
    client = app.test_client()
    service = app.extensions["ranking_service"]
    start = service.registry.ensure_current()
    RankingPolicy.load(STARTING_POLICY).save(service.registry.path_of("v-other"), version="v-other", parent=start)
    forged = [
        client.post("/v1/policies/v-other/promote", data="x", content_type="text/plain"),
        client.post("/v1/policies/rollback", data={"a": "b"}),  # form-encoded
        client.post("/v1/policies/v-other/promote"),  # bodyless, no content type
        client.post("/v1/rank", data='{"user_id": "u", "query": {"text": "mug"}}', content_type="text/plain"),
    ]
    assert [response.status_code for response in forged] == [415] * 4
    assert service.registry.current() == start
    assert client.post("/v1/policies/v-other/promote", content_type=JSON).status_code == 200  # what a script of the shop sends
    assert client.post("/v1/policies/rollback", headers={"X-API-Key": "anything"}).status_code == 200  # a custom header needs a preflight


def test_the_host_is_checked_against_the_allow_list(make_app):
    keyless = make_app().test_client()
    assert keyless.get("/readyz").status_code == 200  # Host: localhost
    rebound = keyless.get("/v1/policies", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 400 and rebound.get_json()["error"]["code"] == "bad_request"
    assert keyless.get("/v1/policies", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    listed = make_app(ALLOWED_HOSTS="shop.example, .internal.example").test_client()
    assert listed.get("/v1/policies", headers={"Host": "shop.example"}).status_code == 200
    assert listed.get("/v1/policies", headers={"Host": "api.internal.example"}).status_code == 200
    assert listed.get("/v1/policies", headers={"Host": "localhost"}).status_code == 400
    keyed = make_app(INGEST_KEY="i", ADMIN_KEY="a").test_client()  # a page elsewhere cannot learn the keys: any name
    assert keyed.get("/v1/policies", headers={"Host": "shop.example"}).status_code == 200


# ------------------------------------------------------------ a server that always starts
@pytest.mark.parametrize("damage", ["corrupt", "pruned", "old schema"])
def test_a_policy_that_will_not_load_falls_back_and_readyz_and_metrics_say_so(make_app, embedded_redis, prefix, tmp_path, damage):
    client = redis.Redis.from_url(embedded_redis)
    policies = tmp_path / "data" / "policies"
    starting = RankingPolicy.load(STARTING_POLICY)
    packaged = starting.version
    starting.save(policies / "v-good", version="v-good", parent=packaged)
    starting.save(policies / "v-bad", version="v-bad", parent="v-good")
    if damage == "corrupt":
        (policies / "v-bad" / "policy.safetensors").write_bytes(b"\0" * 100)
    elif damage == "pruned":
        for path in (policies / "v-bad").iterdir():
            path.unlink()
        (policies / "v-bad").rmdir()
    else:
        manifest = (policies / "v-bad" / "manifest.json").read_text().replace('"schema_hash": "', '"schema_hash": "old-')
        (policies / "v-bad" / "manifest.json").write_text(manifest)
    client.set(key(prefix, "policy", "current"), "v-bad")
    client.lpush(key(prefix, "policy", "history"), "v-good")
    app = make_app()
    http = app.test_client()
    assert rank(http)["policy_version"] == "v-good"
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["policy_fallback"]["wanted"] == "v-bad"
    assert ready.get_json()["policy_fallback"]["serving"] == "v-good"
    assert "ranker_policy_fallback 1.0" in http.get("/metrics").get_data(as_text=True)
    client.delete(key(prefix, "policy", "history"))  # nothing in the history loads: the packaged starting policy
    again = make_app().test_client()
    assert rank(again)["policy_version"] == packaged and again.get("/readyz").get_json()["policy_fallback"]["serving"] == packaged


def test_a_healthy_server_reports_no_fallback(client):
    assert client.get("/readyz").get_json()["policy_fallback"] is None
    assert "ranker_policy_fallback 0.0" in client.get("/metrics").get_data(as_text=True)


# ------------------------------------------------------------ erasure
def every_stored_byte(r: redis.Redis, prefix: str) -> bytes:
    out = []
    for name in r.scan_iter(match=f"{{{prefix}}}*"):
        out.append(name)
        kind = r.type(name)
        if kind == b"string":
            out.append(r.get(name) or b"")
        elif kind == b"hash":
            out.extend(b for pair in r.hgetall(name).items() for b in pair)
        elif kind == b"list":
            out.extend(r.lrange(name, 0, -1))
        elif kind == b"zset":
            out.extend(r.zrange(name, 0, -1))
        elif kind == b"stream":
            out.extend(b for _, fields in r.xrange(name) for pair in fields.items() for b in pair)
    return b"\0".join(out)


def test_erasure_reaches_every_copy_and_refuses_feedback_for_earlier_rankings(make_app, embedded_redis, prefix):
    from ranker.learning.reading import erased_users

    app = make_app(USER_KEY_SECRET="k1")
    client = app.test_client()
    service = app.extensions["ranking_service"]
    start = service.registry.ensure_current()
    experiment = {"experiment_id": "exp-e", "name": "e", "arms": [{"name": "a", "policy": start, "weight": 0.5}, {"name": "b", "policy": start, "weight": 0.5}]}
    assert client.post("/v1/experiments", json=experiment).status_code == 201
    rankings = [
        client.post("/v1/rank", json={"user_id": "zoe", "query": {"text": "zebra print scarf"}, "session_id": "sess-zoe-1"}).get_json() for _ in range(3)
    ]
    other = rank(client, user="yan")
    for body in rankings[:2]:
        event = {"ranking_id": body["ranking_id"], "events": [{"event_id": "zoe-order", "item_id": body["items"][0]["item_id"], "type": "purchase"}]}
        assert client.post("/v1/feedback", json=event).status_code == 202
    r = redis.Redis.from_url(embedded_redis)
    token = service.events.rankings()[0][1].user_key
    ranking_entry = service.events.rankings()[0][0]
    window = key(prefix, "learner", "learner", "replay")
    r.xadd(window, {"entry_id": ranking_entry, "rewards": "[]", "outcomes": "[]", "interactions": "[]"})  # as a learner's commit writes it
    assert b"zebra print scarf" in every_stored_byte(r, prefix) and token.encode() in every_stored_byte(r, prefix)
    assert client.delete("/v1/users/zoe").get_json() == {"erased": True}
    stored = every_stored_byte(r, prefix)
    for trace in (b"zebra print scarf", b"sess-zoe-1", token.encode(), b"zoe-order", *(body["ranking_id"].encode() for body in rankings)):
        assert trace not in stored, trace
    assert [event.user_key for _, event in service.events.rankings()] == [service.events.ranking(other["ranking_id"]).user_key]
    assert service.events.lengths()["interactions"] == 0 and r.xlen(window) == 0
    late = {"ranking_id": rankings[2]["ranking_id"], "events": [{"item_id": rankings[2]["items"][0]["item_id"], "type": "click"}]}
    assert client.post("/v1/feedback", json=late).status_code == 404  # a ranking made before the erasure
    assert service.state.user_profile(token).n_interactions == 0  # ... recreates nothing
    assert erased_users(r, prefix, {token, "someone"}) == {token}  # a learner holding their rankings in memory skips them
