"""Security settings: Redis with a password and with TLS (through ``REDIS_URL``), the API key from a file and
never in the logs. Redis here is Debian's redis-server 7.0 (built with TLS), with a certificate authority and a
server certificate made by openssl for the test."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from api import create_app
from ranker.client import free_port

PASSWORD = "s3cret-redis-pass"
API_KEY = "file-held-api-key-0123456789"

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("openssl") is None, reason="needs Debian's redis-server and openssl (make test installs redis-server)"
)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    files = {name: directory / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "san.cnf")}
    files["san.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    commands = [
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ranker-test-ca",
            "-keyout",
            files["ca.key"],
            "-out",
            files["ca.crt"],
        ],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", files["server.key"], "-out", files["server.csr"]],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            files["server.csr"],
            "-CA",
            files["ca.crt"],
            "-CAkey",
            files["ca.key"],
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            files["san.cnf"],
            "-out",
            files["server.crt"],
        ],
    ]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return files


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory):
    """redis-server with a password on a plain port and on a TLS port."""
    directory = tmp_path_factory.mktemp("secured-redis")
    certificates = make_certificates(directory)
    plain, tls = free_port(), free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(plain),
            "--tls-port",
            str(tls),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--tls-cert-file",
            str(certificates["server.crt"]),
            "--tls-key-file",
            str(certificates["server.key"]),
            "--tls-ca-cert-file",
            str(certificates["ca.crt"]),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis(port=plain, password=PASSWORD).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)
    yield {"plain": plain, "tls": tls, "ca": certificates["ca.crt"]}
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture()
def make_app(tmp_path, demo_engine_of):
    engine = demo_engine_of(12)

    def make(redis_url: str, **config):
        settings = {
            "TESTING": True,
            "DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": redis_url,
            "PREFIX": "security",
            "ENGINE": engine,
            "SEED": 0,
            "USER_KEY_SECRET": "secret",
        }
        settings.update(config)
        return create_app(settings)

    return make


def rank(client):
    response = client.post("/v1/rank", json={"user_id": "u1", "query": {"text": "backpack"}})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_redis_with_a_password_through_redis_url(secured_redis, make_app):
    client = make_app(f"redis://:{PASSWORD}@127.0.0.1:{secured_redis['plain']}/0").test_client()
    assert client.get("/readyz").status_code == 200
    assert rank(client)["logged"] is True
    wrong = make_app(f"redis://:wrong@127.0.0.1:{secured_redis['plain']}/0").test_client()
    ready = wrong.get("/readyz")
    assert ready.status_code == 503 and any("redis" in problem for problem in ready.get_json()["problems"])
    assert rank(wrong)["logged"] is False  # still serves; nothing logged without Redis


def test_redis_over_tls_through_redis_url(secured_redis, make_app):
    url = f"rediss://:{PASSWORD}@127.0.0.1:{secured_redis['tls']}/0?ssl_ca_certs={secured_redis['ca']}"
    client = make_app(url).test_client()
    assert client.get("/readyz").status_code == 200
    body = rank(client)
    assert body["logged"] is True
    assert (
        client.post("/v1/feedback", json={"ranking_id": body["ranking_id"], "events": [{"item_id": body["items"][0]["item_id"], "type": "click"}]}).status_code
        == 202
    )
    untrusted = make_app(f"rediss://:{PASSWORD}@127.0.0.1:{secured_redis['tls']}/0").test_client()  # the test CA is not trusted
    assert untrusted.get("/readyz").status_code == 503
    plain_to_tls = make_app(f"redis://:{PASSWORD}@127.0.0.1:{secured_redis['tls']}/0").test_client()
    assert plain_to_tls.get("/readyz").status_code == 503


def test_the_api_key_comes_from_a_file_and_never_reaches_the_logs(secured_redis, make_app, tmp_path, caplog):
    key_file = tmp_path / "api.key"
    key_file.write_text(API_KEY + "\n")
    caplog.set_level(logging.DEBUG)
    client = make_app(f"redis://:{PASSWORD}@127.0.0.1:{secured_redis['plain']}/0", API_KEY_FILE=str(key_file)).test_client()
    assert client.post("/v1/rank", json={"user_id": "u1", "query": {"text": "backpack"}}).status_code == 401  # the key is the ingest key too
    body = client.post("/v1/rank", json={"user_id": "u1", "query": {"text": "backpack"}}, headers={"X-API-Key": API_KEY}).get_json()
    events = {"ranking_id": body["ranking_id"], "events": [{"item_id": body["items"][0]["item_id"], "type": "click"}]}
    assert client.post("/v1/feedback", json=events).status_code == 401
    assert client.post("/v1/feedback", json=events, headers={"X-API-Key": "nope"}).status_code == 401
    assert client.post("/v1/feedback", json=events, headers={"X-API-Key": API_KEY}).status_code == 202
    assert API_KEY not in caplog.text and PASSWORD not in caplog.text
    with pytest.raises(RuntimeError, match="API_KEY_FILE") as missing:
        make_app(f"redis://:{PASSWORD}@127.0.0.1:{secured_redis['plain']}/0", API_KEY_FILE=str(tmp_path / "absent.key"))
    assert API_KEY not in str(missing.value)


def test_redis_urls_are_redacted_before_they_are_printed():
    from ranker.live.backend import redacted

    assert redacted(f"rediss://:{PASSWORD}@10.0.0.1:6380/0?ssl_ca_certs=/ca.crt") == "rediss://:***@10.0.0.1:6380/0?ssl_ca_certs=/ca.crt"
    assert redacted(f"redis://app:{PASSWORD}@host/1") == "redis://app:***@host/1"
    assert redacted("unix:///tmp/redis.sock") == "unix:///tmp/redis.sock"
