"""Settings are declared once: the environment round-trips through a child's view of it,
and the README documents every variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config import Settings


def test_a_child_parses_the_settings_its_parent_wrote(monkeypatch):
    chosen = Settings.from_env(topic_prefix="", partitions=7, rate_limit=2.5, state_dir=Path("/tmp/sluice-x"),
                               clickhouse_url="http://u:p@h:8123")
    for name, value in chosen.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env() == chosen


def test_an_empty_variable_means_the_default_except_where_empty_is_a_choice(monkeypatch):
    monkeypatch.setenv("SLUICE_PARTITIONS", "")
    monkeypatch.setenv("SLUICE_TOPIC_PREFIX", "")
    settings = Settings.from_env()
    assert settings.partitions == Settings.partitions and settings.topic_prefix == ""


def test_a_fallback_stands_beneath_the_environment(monkeypatch):
    fallback = {"SLUICE_HTTP_PORT": "18080", "SLUICE_PARTITIONS": "9", "SLUICE_TOPIC_PREFIX": "recorded."}
    monkeypatch.delenv("SLUICE_HTTP_PORT", raising=False)
    monkeypatch.setenv("SLUICE_PARTITIONS", "")  # empty: unset, so the fallback applies
    monkeypatch.setenv("SLUICE_TOPIC_PREFIX", "")  # empty is a choice here: it wins
    settings = Settings.from_env(fallback)
    assert (settings.http_port, settings.partitions, settings.topic_prefix) == (18080, 9, "")
    monkeypatch.setenv("SLUICE_HTTP_PORT", "28080")
    assert Settings.from_env(fallback).http_port == 28080


def test_the_readme_documents_every_setting():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [env for env, _, _ in Settings.describe() if f"`{env}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"
    assert len({f.metadata["env"] for f in dataclasses.fields(Settings)}) == len(dataclasses.fields(Settings))


def test_a_switch_reads_true_and_false_and_refuses_anything_else(monkeypatch):
    monkeypatch.setenv("SLUICE_WITH_REGISTRY", "false")
    assert Settings.from_env().with_registry is False
    monkeypatch.setenv("SLUICE_WITH_REGISTRY", "1")
    assert Settings.from_env().with_registry is True
    monkeypatch.setenv("SLUICE_WITH_REGISTRY", "maybe")
    with pytest.raises(ValueError, match="SLUICE_WITH_REGISTRY"):
        Settings.from_env()


def test_a_configured_registry_wins_over_the_local_one():
    assert Settings.from_env(with_registry=True, schema_registry_url="").starts_local_registry
    assert not Settings.from_env(with_registry=True, schema_registry_url="http://r:8081/apis/ccompat/v7"
                                 ).starts_local_registry
    assert not Settings.from_env(with_registry=False, schema_registry_url="").starts_local_registry
