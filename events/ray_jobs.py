"""Thin glue to Ray's jobs API (``JobSubmissionClient``, the API behind ``ray job submit``).

Submissions use a deterministic ``submission_id`` derived from the object version and
the attempt, and Ray refuses a second job with an id it already holds. So submitting is
idempotent: a dispatcher that crashed after submitting but before recording it simply
submits again on restart, and :meth:`RayJobs.submit` adopts the job that already runs.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

logger = logging.getLogger(__name__)

FINISHED_OK, FINISHED_FAILED = {JobStatus.SUCCEEDED}, {JobStatus.FAILED, JobStatus.STOPPED}


def submission_id(object_version: str, attempt: int, requeues: int = 0) -> str:
    """The Ray submission id of one attempt at one object version (same inputs, same id).

    ``requeues`` counts the times the entry came back from the dead letter, so the attempts
    after a requeue get ids that Ray has not seen (it refuses a second job with an old one).
    """
    digest = hashlib.sha256(object_version.encode()).hexdigest()[:24]
    round_part = f"-r{requeues}" if requeues else ""
    return f"rayfleet-{digest}{round_part}-a{attempt}"


class RayJobs:
    """Submit, follow and read the logs of jobs on one Ray cluster."""

    def __init__(self, address: str, runtime_env: dict):
        self.address, self.runtime_env = address, runtime_env
        self._client: JobSubmissionClient | None = None

    @property
    def client(self) -> JobSubmissionClient:
        """Connected at first use: a dispatcher started before its cluster claims events meanwhile, and a
        connection that fails is a failed submission, retried after the backoff."""
        if self._client is None:
            self._client = JobSubmissionClient(self.address)
        return self._client

    def submit(
        self, submission: str, entrypoint: str, metadata: dict[str, str], num_cpus: float = 0, num_gpus: float = 0
    ) -> bool:
        """Submit ``entrypoint`` as ``submission``; False if Ray already had that job (adopted)."""
        try:
            self.client.submit_job(
                entrypoint=entrypoint, submission_id=submission, runtime_env=self.runtime_env, metadata=metadata,
                entrypoint_num_cpus=num_cpus or None, entrypoint_num_gpus=num_gpus or None,
            )  # fmt: skip
            return True
        except RuntimeError as error:
            if "already exists" not in str(error):
                raise
            logger.info("job %s was already submitted: adopting it", submission)
            return False

    def status(self, submission: str) -> JobStatus | None:
        """The job's status, or None if the cluster has no such job (e.g. it was restarted)."""
        try:
            return self.client.get_job_status(submission)
        except RuntimeError as error:
            if "404" in str(error) or "does not exist" in str(error):
                return None
            raise

    def stop(self, submission: str) -> None:
        """Ask the cluster to stop the job (``ray job stop``); it ends as STOPPED."""
        self.client.stop_job(submission)

    def log_tail(self, submission: str, lines: int) -> str:
        """The last ``lines`` lines of the job's logs ('' if they cannot be read)."""
        try:
            return "\n".join(self.client.get_job_logs(submission).splitlines()[-lines:])
        except RuntimeError as error:
            return f"(logs unavailable: {error})"


def runtime_environment(working_dir: str | None, excludes: list[str], env_vars: dict[str, str]) -> dict:
    """The runtime environment that carries the project to the cluster with every job."""
    runtime_env: dict = {"env_vars": dict(env_vars)} if env_vars else {}
    if working_dir:
        runtime_env["working_dir"] = str(Path(working_dir).resolve())
        runtime_env["excludes"] = list(excludes)
    return runtime_env
