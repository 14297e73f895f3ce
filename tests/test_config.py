"""One configuration: the settings every process reads, from RANKER_* variables, with errors that name the variable."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ranker.cli import main
from ranker.config import Settings, SettingsError, default, load_settings
from ranker.learning.config import LearnerConfig
from ranker.serving import ServiceConfig


def test_environment_variables_set_the_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("RANKER_TEMPERATURE", "0.25")
    monkeypatch.setenv("RANKER_LEARN_BATCH_SIZE", "64")
    monkeypatch.setenv("RANKER_LEARN", "0")
    monkeypatch.setenv("RANKER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    settings = load_settings()
    assert settings.temperature == 0.25 and settings.learn_batch_size == 64 and settings.learn is False
    assert settings.data_dir == tmp_path and settings.redis_url == "redis://127.0.0.1:1"
    assert load_settings(temperature=0.0).temperature == 0.0  # an override beats the environment


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [("RANKER_TEMPERATURE", "hot", "RANKER_TEMPERATURE"), ("RANKER_TEMPERATURE", "-1", "RANKER_TEMPERATURE"), ("RANKER_WORKERS", "0", "RANKER_WORKERS")],
)
def test_a_bad_setting_names_the_variable_and_the_value(monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"{named}: .*got '{value}'"):
        load_settings()


def test_every_default_has_one_source():
    """ServiceConfig, LearnerConfig and the CLI take their defaults from Settings; none is written twice."""
    assert ServiceConfig().temperature == default("temperature") and ServiceConfig().num_candidates == default("num_candidates")
    learner = LearnerConfig()
    assert (learner.batch_size, learner.min_batch, learner.label_delay_s, learner.gate_episodes) == (
        default("learn_batch_size"),
        default("learn_min_batch"),
        default("learn_label_delay_s"),
        default("gate_episodes"),
    )
    assert set(Settings.model_fields) >= {"prefix", "temperature", "learn", "gate_env", "device", "bind", "workers"}


def test_cli_defaults_come_from_the_settings_and_their_variables(monkeypatch):
    runner = CliRunner()
    shown = runner.invoke(main, ["learn", "--help"]).output
    assert "(256; env RANKER_LEARN_BATCH_SIZE)" in " ".join(shown.split())
    monkeypatch.setenv("RANKER_LEARN_BATCH_SIZE", "zero")
    failed = runner.invoke(main, ["learn", "--max-updates", "1"])
    assert failed.exit_code != 0 and "RANKER_LEARN_BATCH_SIZE" in failed.output


def test_the_app_reads_the_same_settings(monkeypatch, embedded_redis, tmp_path, demo_engine_of):
    from api import create_app

    monkeypatch.setenv("RANKER_TEMPERATURE", "0.75")
    monkeypatch.setenv("RANKER_NUM_RESULTS", "3")
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "REDIS_URL": embedded_redis, "ENGINE": demo_engine_of(40), "PREFIX": "cfg"})
    service = app.extensions["ranking_service"]
    assert service.config.temperature == 0.75 and service.config.num_results == 3 and service.config.prefix == "cfg"
    assert len(app.test_client().post("/v1/rank", json={"user_id": "u", "query": {"text": "travel bag"}}).get_json()["items"]) == 3
