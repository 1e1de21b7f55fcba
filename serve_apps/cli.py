"""Start or stop the serving app on a running Ray head (``make serve`` / ``make serve-down``).

    python -m serve_apps.cli up [serve_config=serve_apps/configs/local.yaml] [address=127.0.0.1:6379] \\
        [app.KEY=VALUE ...]
    python -m serve_apps.cli down [address=127.0.0.1:6379]

``up`` deploys the first application of the Serve config file, with its ``runtime_env``
(as ``serve run`` would), waits until ``/healthz`` answers and returns; the app keeps
running on the head. ``app.``-prefixed overrides change that application's config
(``args``) before it is validated, so serving your own index needs no copy of the file::

    python -m serve_apps.cli up app.paths.rag.index=s3://bucket/index app.router.relevance.index=s3://bucket/index

API keys: ``RAYFLEET_API_KEYS``
(comma-separated) of the calling shell, written to a private secrets file that the
ingress reads (so keys never sit in the Serve config); without it a key is generated
and printed once. The file is the only source: the replicas' copy of the variable (inherited
from the Ray head's environment) is emptied, so ``make serve`` with new keys retires the old.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
import urllib.request
from pathlib import Path

from pydantic import Field, ValidationError

from rayfleet.config import (
    BaseConfig,
    ConfigError,
    load_config,
    parse_override,
    read_yaml,
    set_nested,
    validation_problems,
)
from serve_apps.config import ServeAppConfig, ServeConfigFile

KEYS_ENV = "RAYFLEET_API_KEYS"
APP_PREFIX = "app."


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


def serve_file(path: str, app_overrides: list[str] = ()) -> ServeConfigFile:
    """The Serve config file at ``path``, with ``app.key.sub=value`` overrides applied to its first
    application's ``args``, validated.

    Raises:
        ConfigError: a malformed override, or a config the overrides make invalid (the key is named).
    """
    raw = read_yaml(path)
    applications = raw.get("applications") or [{}]
    args = applications[0].setdefault("args", {})
    for override in app_overrides:
        key_path, value = parse_override(override.removeprefix(APP_PREFIX), ServeAppConfig)
        set_nested(args, key_path, value)
    try:
        return ServeConfigFile.model_validate(raw)
    except ValidationError as error:
        problems = validation_problems(error, raw, {"applications.0.args": APP_PREFIX.rstrip(".")})
        raise ConfigError(f"invalid serve config {path} with {list(app_overrides)}:\n{problems}") from error


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


def keys_from_file_only(runtime_env: dict | None, keys_env: str) -> dict:
    """``runtime_env`` with the keys variable emptied for the replicas: the secrets file ``up`` writes holds
    the keys. Replicas inherit the Ray head's environment, so a key exported when the head started (and
    retired since) would otherwise stay valid until the head stops."""
    runtime_env = dict(runtime_env or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), keys_env: ""}
    return runtime_env


def up(options: ServeCliConfig, app_overrides: list[str]) -> None:
    import ray
    from ray import serve

    from serve_apps.openai_app import build_app

    file = serve_file(options.serve_config, app_overrides)
    application = file.applications[0]
    keys_file = Path(options.keys_file).resolve()
    write_keys_file(keys_file)
    app_config = application.args.model_copy(deep=True)
    app_config.ingress.auth.keys_file = str(keys_file)
    # Serve gives the app's replicas this driver's runtime environment (env_vars, pip, ...).
    runtime_env = keys_from_file_only(application.runtime_env, app_config.ingress.auth.keys_env)
    ray.init(address=options.address, logging_level="WARNING", runtime_env=runtime_env)
    serve.start(http_options=file.http_options.model_dump(), proxy_location=file.proxy_location)
    serve.run(build_app(app_config), name=application.name, route_prefix=application.route_prefix, blocking=False)
    base_url = f"http://{file.http_options.host}:{file.http_options.port}"
    wait_until_healthy(f"{base_url}/healthz", options.ready_timeout_s)
    print(f"serving {application.name} at {base_url}/v1 (API keys in {keys_file})")


def down(options: ServeCliConfig) -> None:
    """Shut the Serve application down; with no head answering, or no Serve on it, say so and stop
    (``ray.init`` would wait for a head that is not there for ever)."""
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    if not answers(options.address):
        print(f"no Ray head answers at {options.address}: no Serve application to stop")
        return
    ray.init(address=options.address, logging_level="WARNING")
    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        print(f"no Serve application runs on the Ray head at {options.address}: nothing to stop")
        return
    serve.shutdown()
    print("serve stopped")


def answers(address: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def main(argv: list[str]) -> None:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if not argv or argv[0] not in ("up", "down"):
        sys.exit(__doc__)
    app_overrides = [word for word in argv[1:] if word.startswith(APP_PREFIX)]
    try:
        options = load_config(ServeCliConfig, [word for word in argv[1:] if not word.startswith(APP_PREFIX)])
    except ConfigError as error:  # a setting of the app given without its prefix lands here
        hint = f"the app's settings take the prefix {APP_PREFIX} (e.g. {APP_PREFIX}paths.rag.index=...)"
        sys.exit(f"error: {error}\n({hint})")
    try:
        if argv[0] == "up":
            serve_file(options.serve_config, app_overrides)  # the app's config checked before anything starts
    except ConfigError as error:
        sys.exit(f"error: {error}")
    if argv[0] == "up":
        up(options, app_overrides)
    elif app_overrides:
        sys.exit(f"down takes no app. overrides: {app_overrides}")
    else:
        down(options)


if __name__ == "__main__":
    main(sys.argv[1:])
