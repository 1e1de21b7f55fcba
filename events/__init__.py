"""S3 events to Ray jobs: the event-driven, exactly-once dispatcher.

New objects in S3 (reported by SQS notifications or found by a bucket poller) are
matched to rules, claimed in a ledger and submitted to Ray with ``JobSubmissionClient``;
the dispatcher follows each job, retries failures with backoff and dead-letters the
rest. Run ``python -m events run`` (``make dispatch``) and ``python -m events status``;
see ``docs/dispatch.md``.
"""
