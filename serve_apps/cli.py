"""Start or stop the serving app on a running Ray head (``make serve`` / ``make serve-down``).

    python -m serve_apps.cli up [serve_config=serve_apps/configs/local.yaml] [address=127.0.0.1:6379]
    python -m serve_apps.cli down [address=127.0.0.1:6379]

``up`` deploys the first application of the Serve config file, with its ``runtime_env``
(as ``serve run`` would), waits until ``/healthz`` answers and returns; the app keeps
running on the head. API keys: ``RAYFLEET_API_KEYS``
(comma-separated) of the calling shell, written to a private secrets file that the
ingress reads (so keys never sit in the Serve config); without it a key is generated
and printed once.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import urllib.request
from pathlib import Path

from pydantic import Field

from rayfleet.config import BaseConfig, load_config, read_yaml
from serve_apps.config import ServeConfigFile

KEYS_ENV = "RAYFLEET_API_KEYS"


class ServeCliConfig(BaseConfig):
    """Options of ``python -m serve_apps.cli``."""

    serve_config: str = Field("serve_apps/configs/local.yaml", description="Serve config file to deploy.")
    address: str = Field("127.0.0.1:6379", description="GCS address of the Ray head.")
    keys_file: str = Field(".run/serve-api-keys", description="Where up writes the API keys (mode 600).")
    ready_timeout_s: float = Field(600.0, gt=0, description="Longest wait for /healthz after deploying.")


def write_keys_file(path: Path) -> None:
    """Write the caller's keys (or a fresh one, printed) to ``path``, readable only by its owner."""
    keys = [key.strip() for key in os.environ.get(KEYS_ENV, "").split(",") if key.strip()]
    if not keys:
        keys = [f"rf-{secrets.token_urlsafe(24)}"]
        print(f"{KEYS_ENV} is not set; generated an API key: {keys[0]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text("\n".join(keys) + "\n")


def wait_until_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")
        time.sleep(2)


def up(options: ServeCliConfig) -> None:
    import ray
    from ray import serve

    from serve_apps.openai_app import build_app

    file = ServeConfigFile.model_validate(read_yaml(options.serve_config))
    application = file.applications[0]
    keys_file = Path(options.keys_file).resolve()
    write_keys_file(keys_file)
    app_config = application.args.model_copy(deep=True)
    app_config.ingress.auth.keys_file = str(keys_file)
    # Serve gives the app's replicas this driver's runtime environment (env_vars, pip, ...).
    ray.init(address=options.address, logging_level="WARNING", runtime_env=application.runtime_env)
    serve.start(http_options=file.http_options.model_dump(), proxy_location=file.proxy_location)
    serve.run(build_app(app_config), name=application.name, route_prefix=application.route_prefix, blocking=False)
    base_url = f"http://{file.http_options.host}:{file.http_options.port}"
    wait_until_healthy(f"{base_url}/healthz", options.ready_timeout_s)
    print(f"serving {application.name} at {base_url}/v1 (API keys in {keys_file})")


def down(options: ServeCliConfig) -> None:
    import ray
    from ray import serve

    ray.init(address=options.address, logging_level="WARNING")
    serve.shutdown()
    print("serve stopped")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("up", "down"):
        sys.exit(__doc__)
    options = load_config(ServeCliConfig, argv[1:])
    if argv[0] == "up":
        up(options)
    else:
        down(options)


if __name__ == "__main__":
    main(sys.argv[1:])
