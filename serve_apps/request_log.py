"""Request logs to Parquet in storage, in batches: by row count or age, whichever comes first.

Files land as ``<uri>/date=YYYY-MM-DD/part-<time>-<id>.parquet`` (schema
:data:`schemas.serving.REQUEST_LOG_SCHEMA`), one complete file per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pyarrow as pa

from rayfleet import storage
from rayfleet.tables import utc_now, write_table
from schemas.serving import REQUEST_LOG_SCHEMA
from serve_apps.config import RequestLogConfig

logger = logging.getLogger(__name__)


class RequestLogWriter:
    """Buffers request rows and writes them as Parquet files."""

    def __init__(self, config: RequestLogConfig):
        self.config = config
        self.rows: list[dict] = []
        self.oldest: float | None = None

    def add(self, row: dict) -> None:
        if self.config.uri is None:
            return
        self.rows.append(row)
        self.oldest = self.oldest or time.monotonic()

    def due(self) -> bool:
        """True when the buffer is full or its oldest row has waited ``flush_seconds``."""
        if not self.rows:
            return False
        return len(self.rows) >= self.config.batch_rows or time.monotonic() - self.oldest >= self.config.flush_seconds

    def flush(self) -> str | None:
        """Write the buffered rows as one file; returns its URI (None when there was nothing)."""
        if not self.rows or self.config.uri is None:
            return None
        rows, self.rows, self.oldest = self.rows, [], None
        now = utc_now()
        uri = storage.join(
            self.config.uri, f"date={now:%Y-%m-%d}", f"part-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        )
        try:
            write_table(uri, pa.Table.from_pylist(rows, schema=REQUEST_LOG_SCHEMA))
        except Exception:
            self.rows, self.oldest = rows + self.rows, time.monotonic()  # kept for the next try
            raise
        return uri

    async def run(self, poll_seconds: float = 1.0) -> None:
        """Flush whenever due, forever (a background task of the ingress)."""
        while True:
            await asyncio.sleep(poll_seconds)
            if self.due():
                try:
                    await asyncio.to_thread(self.flush)
                except Exception:  # storage down: keep serving, say so
                    logger.exception("request log flush failed")
