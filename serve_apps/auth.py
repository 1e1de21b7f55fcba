"""API keys: loaded from an environment variable and/or a secrets file, checked in constant time."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from serve_apps.config import AuthConfig


def load_api_keys(config: AuthConfig) -> list[bytes]:
    """Every configured key (comma-separated in ``config.keys_env``, one per line in ``config.keys_file``)."""
    keys = [key.strip() for key in os.environ.get(config.keys_env, "").split(",")]
    if config.keys_file:
        keys += [line.strip() for line in Path(config.keys_file).read_text().splitlines()]
    return [key.encode() for key in keys if key and not key.startswith("#")]


class ApiKeyChecker:
    """Says whether an ``Authorization`` header holds a valid key, taking the same time for any wrong key."""

    def __init__(self, config: AuthConfig):
        self.required = config.required
        self.keys = load_api_keys(config)
        if self.required and not self.keys:
            raise ValueError(
                f"no API keys: set {config.keys_env} (comma-separated) or auth.keys_file, or auth.required=false"
            )

    def allows(self, authorization: str | None) -> bool:
        if not self.required:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        candidate = presented.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every key without stopping early, so timing says nothing about which matched.
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        return bool(candidate) and any(matches)
