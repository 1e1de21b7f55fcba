"""Requeueing dead letters: a fresh round of attempts with the current rules, and its command line."""

from __future__ import annotations

import shlex

import pytest

from events.__main__ import main as events_main
from events.config import DispatchConfig
from events.dispatcher import claims_to_submit
from events.ledger import CLAIMED, DEAD_LETTER, SUCCEEDED, LedgerEntry, SqliteLedger
from events.ray_jobs import submission_id
from events.requeue import requeue_dead_letters

FIXED_RULE = {"name": "fixed", "prefix": "incoming/", "job": "jobs.fault_injection",
              "overrides": ["input={uri}", "exit_code=0"]}  # fmt: skip


def dead_letter(ledger: SqliteLedger, key: str, state: str = DEAD_LETTER, version: str = "etag") -> LedgerEntry:
    object_version = f"data/{key}@{version}"
    entry = LedgerEntry(object_version, "data", key, "etag", 10, "broken", "python -m jobs.fault_injection exit_code=1",
                        state=state, attempt=3, submission_id=submission_id(object_version, 3), owner="old",
                        created_at=1.0, updated_at=2.0, last_error="job FAILED", log_tail="Traceback ...")  # fmt: skip
    ledger.claim(entry)
    return entry


@pytest.fixture
def ledger(tmp_path) -> SqliteLedger:
    return SqliteLedger(tmp_path / "ledger.sqlite")


def config_for(ledger_path, rules: list[dict]) -> DispatchConfig:
    values = {"ledger": {"sqlite_path": str(ledger_path)}, "rules": rules, "dispatcher_id": "me"}
    return DispatchConfig.model_validate(values)


def test_requeue_resets_the_named_dead_letter_with_the_current_rules(ledger, tmp_path):
    entry = dead_letter(ledger, "incoming/a.parquet")
    other = dead_letter(ledger, "incoming/b.parquet")
    config = config_for(tmp_path / "ledger.sqlite", [FIXED_RULE])

    report = requeue_dead_letters(ledger, config, ["s3://data/incoming/a.parquet", "s3://data/incoming/nope"], now=50.0)

    assert (report.requeued, report.not_found) == ([entry.object_version], ["s3://data/incoming/nope"])
    requeued = ledger.get(entry.object_version)
    assert (requeued.state, requeued.attempt, requeued.requeues, requeued.owner) == (CLAIMED, 1, 1, "")
    assert requeued.rule == "fixed"
    assert shlex.split(requeued.entrypoint)[3:] == ["input=s3://data/incoming/a.parquet", "exit_code=0"]
    old_ids = {submission_id(entry.object_version, attempt) for attempt in (1, 2, 3)}
    assert requeued.submission_id not in old_ids, "Ray refuses a second job under an old id"
    assert claims_to_submit([requeued], config.model_copy(update={"dispatcher_id": "any"}), now=50.0) == [requeued]
    assert ledger.get(other.object_version).state == DEAD_LETTER


def test_requeue_by_state_takes_every_dead_letter_and_only_those(ledger, tmp_path):
    dead_letter(ledger, "incoming/a.parquet")
    dead_letter(ledger, "incoming/done.parquet", state=SUCCEEDED)
    dead_letter(ledger, "elsewhere/c.parquet")
    config = config_for(tmp_path / "ledger.sqlite", [FIXED_RULE])

    report = requeue_dead_letters(ledger, config, [], now=50.0)

    assert report.requeued == ["data/incoming/a.parquet@etag"]
    assert report.without_rule == ["data/elsewhere/c.parquet@etag"], "no rule matches it now: left as it is"
    assert ledger.get("data/elsewhere/c.parquet@etag").state == DEAD_LETTER
    assert ledger.get("data/incoming/done.parquet@etag").state == SUCCEEDED


def test_a_second_requeue_gets_new_submission_ids_again(ledger, tmp_path):
    entry = dead_letter(ledger, "incoming/a.parquet")
    config = config_for(tmp_path / "ledger.sqlite", [FIXED_RULE])
    requeue_dead_letters(ledger, config, [], now=50.0)
    first_round = ledger.get(entry.object_version).submission_id
    ledger.transition(entry.object_version, [CLAIMED], first_round, state=DEAD_LETTER)

    requeue_dead_letters(ledger, config, [f"s3://data/incoming/a.parquet@{entry.version}"], now=60.0)

    second = ledger.get(entry.object_version)
    assert (second.state, second.requeues) == (CLAIMED, 2) and second.submission_id != first_round


def test_requeue_command(ledger, tmp_path, capsys):
    dead_letter(ledger, "incoming/a.parquet")
    rules = "rules=[{name: fixed, prefix: incoming/, job: jobs.fault_injection, overrides: ['input={uri}']}]"
    path = f"ledger.sqlite_path={tmp_path / 'ledger.sqlite'}"

    events_main(["requeue", path, rules, "--state", "dead_letter"])

    assert "requeued data/incoming/a.parquet@etag" in capsys.readouterr().out
    assert ledger.get("data/incoming/a.parquet@etag").state == CLAIMED
    with pytest.raises(SystemExit, match="the config has no rules"):  # it would requeue nothing, and say so quietly
        events_main(["requeue", path, "--state", "dead_letter"])
    for wrong in (["requeue", path], ["requeue", path, "--state", "succeeded"],
                  ["requeue", path, "--state", "dead_letter", "s3://data/incoming/a.parquet"]):  # fmt: skip
        with pytest.raises(SystemExit):
            events_main(wrong)


def test_a_dead_lettered_deletion_is_requeued_only_under_a_rule_that_follows_deletions(ledger, tmp_path):
    deletion = dead_letter(ledger, "incoming/a.pdf", version="removed~etag")
    ignores = config_for(tmp_path / "ledger.sqlite", [FIXED_RULE])
    assert requeue_dead_letters(ledger, ignores, [], now=50.0).without_rule == [deletion.object_version]

    follows = config_for(tmp_path / "ledger.sqlite", [{**FIXED_RULE, "on_removed": True}])
    assert requeue_dead_letters(ledger, follows, [], now=60.0).requeued == [deletion.object_version]


def test_requeue_by_version_takes_every_entry_of_those_bytes_and_by_object_version_one(ledger, tmp_path):
    first = dead_letter(ledger, "incoming/a.parquet", version="etag~2026-12-01T01:00:00+00:00")
    again = dead_letter(ledger, "incoming/a.parquet", version="etag~2026-12-01T03:00:00+00:00")
    config = config_for(tmp_path / "ledger.sqlite", [FIXED_RULE])
    exact = requeue_dead_letters(ledger, config, [f"s3://{again.object_version}"], now=50.0)
    assert (exact.requeued, exact.not_found) == ([again.object_version], [])
    assert ledger.get(first.object_version).state == DEAD_LETTER
    by_etag = requeue_dead_letters(ledger, config, ["s3://data/incoming/a.parquet@etag"], now=60.0)
    assert by_etag.requeued == [first.object_version], "the other is no dead letter any more"


def test_the_command_line_refuses_a_missing_ledger_or_rule_config_and_a_bad_config_in_one_line(
    ledger, tmp_path, capsys
):
    """``status`` or ``requeue`` on a mistyped ledger path would create an empty ledger and report nothing
    to do; a rule's config file missing from the working dir would fail on the cluster after every retry."""
    with pytest.raises(SystemExit, match=f"no ledger at {tmp_path}/nodir/ledger.sqlite"):
        events_main(["status", f"ledger.sqlite_path={tmp_path}/nodir/ledger.sqlite"])
    assert not (tmp_path / "nodir").exists()
    rules = (
        "rules=[{name: r, job: jobs.summarize, config: jobs/configs/summarize/nonesuch.yaml, "
        "overrides: ['input={uri}']}]"
    )
    with pytest.raises(SystemExit, match="rule 'r': config jobs/configs/summarize/nonesuch.yaml is no file in"):
        events_main(["requeue", f"ledger.sqlite_path={tmp_path / 'ledger.sqlite'}", rules, "--state", "dead_letter"])
    for wrong in ([f"config={tmp_path}/none.yaml"], ["status_limit=0"], ["nosuchkey=1"]):
        with pytest.raises(SystemExit) as exit_:
            events_main(["status", *wrong])
        assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: ")


def test_requeueing_what_is_no_dead_letter_exits_non_zero(ledger, tmp_path, capsys):
    rules = "rules=[{name: fixed, prefix: incoming/, job: jobs.fault_injection, overrides: ['input={uri}']}]"
    with pytest.raises(SystemExit) as exit_:
        events_main(
            ["requeue", f"ledger.sqlite_path={tmp_path / 'ledger.sqlite'}", rules, "s3://data/incoming/none.parquet"]
        )
    assert exit_.value.code == 1 and "no dead letter for s3://data/incoming/none.parquet" in capsys.readouterr().out
