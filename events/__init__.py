"""S3 events to Ray jobs: the event-driven, exactly-once dispatcher.

New and deleted objects in S3 (reported by SQS notifications or found by a bucket poller) are
matched to rules, claimed in a ledger and submitted to Ray with ``JobSubmissionClient``;
at most ``max_running_jobs`` at a time, oldest first; the dispatcher follows each job,
stops one past its rule's timeout, retries failures with backoff and dead-letters the
rest. Run ``python -m events run`` (``make dispatch``), ``python -m events status`` and
``python -m events requeue`` (dead letters back in the queue); see ``docs/dispatch.md``.
"""
