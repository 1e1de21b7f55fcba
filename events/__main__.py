"""Command line of the dispatcher: ``run`` it, or show the ledger's ``status``.

::

    python -m events run [config=jobs/configs/dispatch/local.yaml] [key.sub=value ...]   # make dispatch
    python -m events status [config=...] [status_limit=50]

``run`` stays in the foreground (Ctrl-C stops it; a restart picks up where it was).
``status`` lists the most recent object versions, their rule, state, attempt, Ray
submission id and last error.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

from events.config import DispatchConfig
from events.dispatcher import build_dispatcher, build_ledger
from events.ledger import LedgerEntry
from rayfleet.config import load_config

USAGE = "usage: python -m events run|status [config=FILE] [key.sub=value ...]"


def status_table(entries: list[LedgerEntry]) -> str:
    """The ledger entries as a fixed-width table, newest first."""
    header = ("UPDATED (UTC)", "STATE", "TRY", "RULE", "OBJECT", "VERSION", "RAY SUBMISSION ID", "LAST ERROR")
    rows = [header] + [
        (
            datetime.fromtimestamp(entry.updated_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            entry.state, str(entry.attempt), entry.rule, f"s3://{entry.bucket}/{entry.key}", entry.version[:12],
            entry.submission_id, entry.last_error[:60],
        )  # fmt: skip
        for entry in entries
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(arguments: list[str]) -> None:
    if not arguments or arguments[0] not in ("run", "status"):
        sys.exit(USAGE)
    config = load_config(DispatchConfig, arguments[1:])
    if arguments[0] == "run":
        try:
            build_dispatcher(config).run()
        except KeyboardInterrupt:
            print("dispatcher stopped; open entries are picked up at the next start", file=sys.stderr)
    else:
        entries = build_ledger(config).recent(config.status_limit)
        print(status_table(entries) if entries else "the ledger has no events yet")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
