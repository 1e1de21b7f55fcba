"""Rules: matching on bucket, prefix, suffix and size; entrypoints rendered from templates."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from events.config import DispatchConfig
from events.rules import ObjectEvent, Rule, entrypoint, first_match
from rayfleet.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def summarize_rule(**changes) -> Rule:
    values = dict(name="summarize", prefix="incoming/", suffix=".parquet", job="jobs.summarize",
                  overrides=["input={uri}", "output=s3://{bucket}/summaries/{stem}"])  # fmt: skip
    return Rule(**{**values, **changes})


def test_rule_matches_prefix_suffix_bucket_and_size():
    rule = summarize_rule(bucket="data", max_size=1000)
    assert rule.matches(ObjectEvent("data", "incoming/a.parquet", 10, "e1"))
    assert not rule.matches(ObjectEvent("other", "incoming/a.parquet", 10, "e1"))
    assert not rule.matches(ObjectEvent("data", "archive/a.parquet", 10, "e1"))
    assert not rule.matches(ObjectEvent("data", "incoming/a.csv", 10, "e1"))
    assert not rule.matches(ObjectEvent("data", "incoming/a.parquet", 0, "e1")), "empty objects are skipped"
    assert not rule.matches(ObjectEvent("data", "incoming/a.parquet", 1001, "e1"))


def test_first_matching_rule_wins():
    special = summarize_rule(name="special", prefix="incoming/special/")
    general = summarize_rule(name="general")
    event = ObjectEvent("data", "incoming/special/x.parquet", 5, "e")
    assert first_match([special, general], event).name == "special"
    assert first_match([general, special], event).name == "general"
    assert first_match([special], ObjectEvent("data", "incoming/x.parquet", 5, "e")) is None


def test_entrypoint_fills_placeholders_and_quotes_them():
    rule = summarize_rule(config="jobs/configs/summarize/smollm2_vllm.yaml")
    event = ObjectEvent("data", "incoming/q3 report.parquet", 5, "etag1")
    command = entrypoint(rule, event)
    assert shlex.split(command) == [
        "python", "-m", "jobs.summarize", "config=jobs/configs/summarize/smollm2_vllm.yaml",
        "input=s3://data/incoming/q3 report.parquet", "output=s3://data/summaries/q3 report",
    ]  # fmt: skip


def test_version_id_beats_etag_in_the_object_version():
    assert ObjectEvent("b", "k", 1, "etag").object_version == "b/k@etag"
    assert ObjectEvent("b", "k", 1, "etag", version_id="v2").object_version == "b/k@v2"


def test_unknown_placeholder_fails_when_the_rules_load():
    with pytest.raises(ValueError, match="unknown placeholders"):
        summarize_rule(overrides=["input={url}"])
    with pytest.raises(ConfigError, match="rules"):
        load_config(DispatchConfig, ["rules=[{name: r, job: jobs.summarize, overrides: ['input={file}']}]"])


def test_default_rules_send_incoming_parquet_to_the_summarization_job():
    config = load_config(DispatchConfig, [f"config={REPO / 'jobs/configs/dispatch/local.yaml'}"])
    rule = first_match(config.rules, ObjectEvent("rayfleet", "incoming/papers.parquet", 2048, "e"))
    assert rule is not None
    assert shlex.split(entrypoint(rule, ObjectEvent("rayfleet", "incoming/papers.parquet", 2048, "e"))) == [
        "python", "-m", "jobs.summarize", "input=s3://rayfleet/incoming/papers.parquet",
        "output=s3://rayfleet/summaries/papers",
    ]  # fmt: skip


def test_default_rules_send_raw_files_to_ingestion_before_parquet_to_summarization():
    config = load_config(DispatchConfig, [f"config={REPO / 'jobs/configs/dispatch/local.yaml'}"])
    for key in ("incoming/raw/manual.pdf", "incoming/raw/team/notes.eml", "incoming/raw/export.parquet"):
        event = ObjectEvent("rayfleet", key, 2048, "e")
        assert shlex.split(entrypoint(first_match(config.rules, event), event)) == [
            "python", "-m", "jobs.ingest", f"input=s3://rayfleet/{key}", "output=s3://rayfleet/corpus",
            "index_output=s3://rayfleet/index"]  # fmt: skip
    parquet = ObjectEvent("rayfleet", "incoming/papers.parquet", 2048, "e")
    assert first_match(config.rules, parquet).job == "jobs.summarize"
