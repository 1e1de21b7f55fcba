"""Command line of the dispatcher: ``run`` it, show the ledger's ``status``, ``requeue`` dead letters.

::

    python -m events run config=jobs/configs/dispatch/local.yaml [key.sub=value ...]   # make dispatch
    python -m events status [config=...] [status_limit=50]
    python -m events requeue config=... s3://bucket/key[@version] ... | --state dead_letter

``run`` and ``requeue`` need rules (``config=`` a file with them, or ``rules=[...]``): the
built-in defaults have none.

``run`` stays in the foreground (Ctrl-C stops it; a restart picks up where it was).
``status`` lists the most recent object versions (a deletion's version marked
``deleted``), their rule, state, attempt, Ray submission id and last error. ``requeue``
puts dead letters back in the queue for a fresh round of attempts, their entrypoints
rebuilt from the current rules (see :mod:`events.requeue`); a running dispatcher submits
them at its next cycle.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import unicodedata
from datetime import datetime, timezone

from events.config import DispatchConfig, missing_rule_configs, unknown_rule_jobs
from events.dispatcher import build_dispatcher, build_ledger
from events.ledger import DEAD_LETTER, LedgerEntry
from events.requeue import requeue_dead_letters
from rayfleet.config import config_or_exit

logger = logging.getLogger("events")

USAGE = (
    "usage: python -m events run config=FILE [key.sub=value ...]\n"
    "       python -m events status [config=FILE] [key.sub=value ...]\n"
    "       python -m events requeue config=FILE [key.sub=value ...] s3://bucket/key[@version] ...\n"
    "       python -m events requeue config=FILE [key.sub=value ...] --state dead_letter"
)


def status_table(entries: list[LedgerEntry]) -> str:
    """The ledger entries as a fixed-width table, newest first."""
    header = ("UPDATED (UTC)", "STATE", "TRY", "RULE", "OBJECT", "VERSION", "RAY SUBMISSION ID", "LAST ERROR")
    rows = [header] + [
        (
            datetime.fromtimestamp(entry.updated_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            entry.state,
            str(entry.attempt),
            entry.rule,
            f"s3://{entry.bucket}/{entry.key}",
            f"{'deleted ' if entry.removal else ''}{entry.version[:12]}",
            entry.submission_id,
            entry.last_error[:60],
        )  # fmt: skip
        for entry in entries
    ]
    widths = [max(display_width(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell + " " * (width - display_width(cell)) for cell, width in zip(row, widths)).rstrip()
        for row in rows
    )


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide (CJK, most emoji) characters two, combining marks none."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text
    )


def requeue_arguments(arguments: list[str]) -> tuple[list[str], list[str]]:
    """Split ``requeue``'s words into targets (``s3://...``, or none for ``--state dead_letter``) and overrides.

    Raises:
        SystemExit: neither targets nor ``--state dead_letter``, or another state.
    """
    targets, overrides, every_dead_letter = [], [], False
    words = iter(arguments)
    for word in words:
        if word == "--state":
            if next(words, None) != DEAD_LETTER:
                sys.exit(f"only dead letters can be requeued (--state {DEAD_LETTER})\n{USAGE}")
            every_dead_letter = True
        elif word.startswith("s3://"):
            targets.append(word)
        else:
            overrides.append(word)
    if every_dead_letter == bool(targets):
        sys.exit(f"requeue needs object URIs or --state {DEAD_LETTER} (not both)\n{USAGE}")
    return targets, overrides


def config_with_rules(arguments: list[str]) -> DispatchConfig:
    """The dispatcher's config, which must hold rules for ``run`` and ``requeue``.

    Raises:
        SystemExit: no rules (the built-in defaults have none: without ``config=`` nothing would
            ever be submitted or requeued, silently), or a rule's config file missing from the working dir.
    """
    config = config_or_exit(DispatchConfig, arguments)
    if not config.rules:
        sys.exit("the config has no rules, so nothing would be submitted or requeued: pass config=FILE "
                 f"(e.g. config=jobs/configs/dispatch/local.yaml, as make dispatch does)\n{USAGE}")  # fmt: skip
    missing = missing_rule_configs(config)
    if missing:
        sys.exit("error: " + "; ".join(missing))
    for problem in unknown_rule_jobs(config):
        logger.warning("%s: its jobs fail unless the cluster has it", problem)
    return config


def existing_ledger(config: DispatchConfig):
    """The ledger ``status`` and ``requeue`` read: a SQLite file that is not there is a mistyped path, not
    an empty ledger (opening it would create it)."""
    if config.ledger.kind == "sqlite" and not os.path.isfile(config.ledger.sqlite_path):
        sys.exit(f"error: no ledger at {config.ledger.sqlite_path} (the dispatcher creates it when it first runs; "
                 "check ledger.sqlite_path)")  # fmt: skip
    return build_ledger(config)


def requeue(arguments: list[str]) -> None:
    """``python -m events requeue``: put dead letters back in the queue and say what was done."""
    targets, overrides = requeue_arguments(arguments)
    config = config_with_rules(overrides)
    report = requeue_dead_letters(existing_ledger(config), config, targets, time.time())
    for object_version in report.requeued:
        print(f"requeued {object_version}")
    for object_version in report.without_rule:
        print(f"left in the dead letter (no rule matches it now): {object_version}")
    for target in report.not_found:
        print(f"no dead letter for {target}")
    if not (report.requeued or report.without_rule or report.not_found):
        print("no dead letters")
    if report.not_found:
        sys.exit(1)


def main(arguments: list[str]) -> None:
    if arguments[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{__doc__}")
        return
    if not arguments or arguments[0] not in ("run", "status", "requeue"):
        sys.exit(USAGE)
    if arguments[0] == "requeue":
        requeue(arguments[1:])
        return
    if arguments[0] == "run":
        config = config_with_rules(arguments[1:])
        try:
            build_dispatcher(config).run()
        except KeyboardInterrupt:
            print("dispatcher stopped; open entries are picked up at the next start", file=sys.stderr)
    else:
        config = config_or_exit(DispatchConfig, arguments[1:])
        entries = existing_ledger(config).recent(config.status_limit)
        print(status_table(entries) if entries else "the ledger has no events yet")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
