"""Rules: matching on bucket, prefix, suffix and size; entrypoints rendered from templates.

Rendered values must reach the job as exactly the object's names: the job reads each
override as YAML, so the round trip goes through ``rayfleet.config`` as the job does.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from events.config import DispatchConfig
from events.rules import ObjectEvent, Rule, entrypoint, first_match, placeholder_values, sized_out, yaml_exact
from jobs.fault_injection import FaultInjectionJobConfig
from rayfleet.config import ConfigError, load_config, parse_override

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


def test_an_object_a_rule_names_but_cannot_take_for_its_size_is_told_from_one_no_rule_names():
    rules = [summarize_rule(name="big", prefix="incoming/big/", min_size=100), summarize_rule(max_size=1000)]
    empty = ObjectEvent("data", "incoming/a.parquet", 0, "e")
    huge = ObjectEvent("data", "incoming/a.parquet", 5000, "e")
    assert first_match(rules, empty) is None and sized_out(rules, empty).name == "summarize"
    assert sized_out(rules, huge).name == "summarize"
    assert sized_out(rules, ObjectEvent("data", "incoming/a.csv", 0, "e")) is None, "no rule names a .csv"
    assert sized_out(rules, ObjectEvent("data", "incoming/a.parquet", 10, "e")) is None, "a rule takes it"
    assert sized_out(rules, ObjectEvent("data", "incoming/a.parquet", 0, "e", removed=True)) is None


def test_a_folder_marker_matches_no_rule_created_or_deleted():
    """An S3 console's "Create folder" writes an empty ``name/`` object: its deletion was sent to ingest."""
    rule = summarize_rule(suffix="", min_size=0, on_removed=True)
    assert rule.matches(ObjectEvent("data", "incoming/q3.parquet", 0, "e", removed=True))
    assert not rule.matches(ObjectEvent("data", "incoming/q3/", 0, "e"))
    assert not rule.matches(ObjectEvent("data", "incoming/q3/", 0, "e", removed=True))


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
    assert ObjectEvent("b", "k", 1, "etag", version_id="v2", uploaded="0055AED6DCD90281E5").object_version == "b/k@v2"


def test_without_a_version_id_each_upload_of_the_same_bytes_is_its_own_object_version():
    first, again = (
        ObjectEvent("b", "k", 1, "etag", uploaded=mark) for mark in ("0055AED6DCD90281E5", "0055AED6DCD9028A11")
    )
    assert first.object_version == "b/k@etag~0055AED6DCD90281E5" != again.object_version
    assert first.version == again.version == "etag", "placeholders still name the contents"


def test_unknown_placeholder_fails_when_the_rules_load():
    with pytest.raises(ValueError, match="unknown placeholders"):
        summarize_rule(overrides=["input={url}"])
    with pytest.raises(ConfigError, match="rules"):
        load_config(DispatchConfig, ["rules=[{name: r, job: jobs.summarize, overrides: ['input={file}']}]"])
    for override in ("output=s3://{bucket}/s/{stem:d}", "output={uri!z}", "output={uri:{name}}"):
        with pytest.raises(ValueError, match="cannot be filled in"):
            summarize_rule(overrides=["input={uri}", override])


@pytest.mark.parametrize("rule, complaint", [
    ({"suffix": "*.pdf"}, "matched as written, not as globs"),
    ({"min_size": 10, "max_size": 5}, "max_size 5 is below min_size 10"),
])  # fmt: skip
def test_a_rule_that_could_never_match_fails_when_the_rules_load(rule, complaint):
    with pytest.raises(ValueError, match=complaint):
        summarize_rule(**rule)


def test_rule_names_must_be_distinct():
    rule = "{name: r, job: jobs.summarize, overrides: ['input={uri}']}"
    with pytest.raises(ConfigError, match=r"rule names must be distinct.*\['r'\]"):
        load_config(DispatchConfig, [f"rules=[{rule}, {rule}]"])


def test_default_rules_send_incoming_parquet_to_the_summarization_job():
    config = load_config(DispatchConfig, [f"config={REPO / 'jobs/configs/dispatch/local.yaml'}"])
    rule = first_match(config.rules, ObjectEvent("rayfleet", "incoming/papers.parquet", 2048, "e"))
    assert rule is not None
    assert shlex.split(entrypoint(rule, ObjectEvent("rayfleet", "incoming/papers.parquet", 2048, "e"))) == [
        "python", "-m", "jobs.summarize", "input=s3://rayfleet/incoming/papers.parquet",
        "output=s3://rayfleet/summaries/papers/e", "missing_ok=true",
    ]  # fmt: skip


def test_default_rules_send_raw_files_to_ingestion_before_parquet_to_summarization():
    config = load_config(DispatchConfig, [f"config={REPO / 'jobs/configs/dispatch/local.yaml'}"])
    for key in ("incoming/raw/manual.pdf", "incoming/raw/team/notes.eml", "incoming/raw/export.parquet"):
        event = ObjectEvent("rayfleet", key, 2048, "e")
        assert shlex.split(entrypoint(first_match(config.rules, event), event)) == [
            "python", "-m", "jobs.ingest", f"input=s3://rayfleet/{key}", "output=s3://rayfleet/corpus",
            "index_output=s3://rayfleet/index", "missing_ok=true"]  # fmt: skip
    parquet = ObjectEvent("rayfleet", "incoming/papers.parquet", 2048, "e")
    assert first_match(config.rules, parquet).job == "jobs.summarize"


@pytest.mark.parametrize("config_file", ["local.yaml", "aws.yaml"])
def test_default_rules_ingest_a_deleted_raw_file_and_leave_deleted_parquet_alone(config_file):
    config = load_config(DispatchConfig, [f"config={REPO / 'jobs/configs/dispatch' / config_file}"])
    deleted = ObjectEvent("rayfleet", "incoming/raw/manual.pdf", 0, "e", removed=True)
    assert shlex.split(entrypoint(first_match(config.rules, deleted), deleted))[:4] == [
        "python", "-m", "jobs.ingest", "input=s3://rayfleet/incoming/raw/manual.pdf"]  # fmt: skip
    assert first_match(config.rules, ObjectEvent("rayfleet", "incoming/papers.parquet", 0, "e", removed=True)) is None


def test_a_deletion_matches_only_rules_that_follow_deletions_whatever_their_sizes():
    deleted = ObjectEvent("data", "incoming/a.parquet", 0, "e1", removed=True)
    assert not summarize_rule().matches(deleted)
    assert summarize_rule(on_removed=True, min_size=100).matches(deleted)
    assert not summarize_rule(on_removed=True, prefix="other/").matches(deleted)
    follows = summarize_rule(name="follows", on_removed=True)
    assert first_match([summarize_rule(), follows], deleted) is follows, "passed over by rules that do not follow them"


def test_a_deletion_is_its_own_object_version():
    created = ObjectEvent("b", "k", 1, "etag", uploaded="2026-12-01T02:19:36+00:00")
    deleted = ObjectEvent("b", "k", 0, "etag", uploaded="2026-12-01T02:19:36+00:00", removed=True)
    assert deleted.object_version == "b/k@removed~etag~2026-12-01T02:19:36+00:00" != created.object_version
    assert ObjectEvent("b", "k", 0, "", uploaded="005F3A", removed=True).object_version == "b/k@removed~005F3A"
    assert ObjectEvent("b", "k", 0, "", "marker-v9", removed=True).object_version == "b/k@removed~marker-v9"


NASTY_NAMES = [
    "Invoice #123.pdf",
    "Re: budget 2025.eml",
    'it\'s "quoted".pdf',
    "Ünïcode файл 文件 😀.pdf",
    "notes - v2 .pdf",
    "- leading dash.pdf",
    "[draft].pdf",
    "{brace}.pdf",
    "%percent.pdf",
    "@at.pdf",
    "*star.pdf",
    "!bang.pdf",
    "&amp.pdf",
    "a&b $HOME `x`.pdf",
    "null",
    "yes",
    "123",
    "1e3",
    " leading space.pdf",
    "tab\there.pdf",
    "line\nbreak.pdf",
    "back\\slash.pdf",
    "key: value # comment.pdf",
    "? question.pdf",
    "| pipe.pdf",
    "> gt.pdf",
]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_any_object_name_reaches_the_job_as_exactly_that_string(name):
    rule = Rule(name="r", prefix="incoming/", job="jobs.fault_injection", overrides=["input={uri}", "exit_code=3"])
    event = ObjectEvent("data", f"incoming/{name}", 5, "e")
    arguments = shlex.split(entrypoint(rule, event))[3:]
    config = load_config(FaultInjectionJobConfig, arguments)
    assert config.input == f"s3://data/incoming/{name}"
    assert config.exit_code == 3, "a value without placeholders stays YAML as written"


@pytest.mark.parametrize("value", NASTY_NAMES + ["", "'", "''", "a\x01b\x7f\u2028", "\ufeffbom", "~"])
def test_yaml_exact_values_read_back_through_parse_override(value):
    assert parse_override(f"input={yaml_exact(value)}") == (["input"], value)


def test_ordinary_names_are_passed_unquoted():
    assert yaml_exact("s3://data/incoming/q3 report.parquet") == "s3://data/incoming/q3 report.parquet"


def test_stem_drops_only_the_last_extension_and_relative_key_drops_the_prefix():
    rule = summarize_rule()
    values = placeholder_values(rule, ObjectEvent("data", "incoming/team/2024.01.parquet", 5, "e/1+x"))
    assert values["stem"] == "2024.01"
    assert values["relative_key"] == "team/2024.01.parquet"
    assert values["relative_stem"] == "team/2024.01"
    assert (values["version"], values["safe_version"]) == ("e/1+x", "e_1_x")


def default_output(key: str, etag: str = "e") -> str:
    config = load_config(DispatchConfig, [f"config={REPO / 'jobs/configs/dispatch/local.yaml'}"])
    event = ObjectEvent("rayfleet", key, 2048, etag)
    words = shlex.split(entrypoint(first_match(config.rules, event), event))
    (output,) = [word for word in words if word.startswith("output=")]
    return output


def test_default_outputs_differ_for_every_key():
    keys = ["incoming/2024.01.parquet", "incoming/2024.02.parquet", "incoming/teamA/part-0.parquet",
            "incoming/teamB/part-0.parquet", "incoming/part-0.parquet"]  # fmt: skip
    outputs = [default_output(key) for key in keys]
    assert len(set(outputs)) == len(keys), outputs
    assert outputs[2] == "output=s3://rayfleet/summaries/teamA/part-0/e"


def test_a_new_version_of_an_object_gets_a_new_default_output():
    assert default_output("incoming/docs.parquet", "etag-old") != default_output("incoming/docs.parquet", "etag-new")
