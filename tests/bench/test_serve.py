"""bench.serve's own settings (the load run itself needs a running app: `make bench-serve`).

bench.serve patches the process for gevent (Locust) on import, so it is imported in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEY_OF = (
    "from bench.serve import BenchServeConfig, api_key; import sys; "
    "print(api_key(BenchServeConfig(keys_file=sys.argv[1])))"
)


def key_found(keys_file: Path, environment_keys: str | None) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "RAYFLEET_API_KEYS"}
    if environment_keys is not None:
        env["RAYFLEET_API_KEYS"] = environment_keys
    return subprocess.run([sys.executable, "-c", KEY_OF, str(keys_file)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_the_api_key_comes_from_the_environment_else_from_the_keys_make_serve_wrote(tmp_path):
    keys_file = tmp_path / "serve-api-keys"
    keys_file.write_text("# written by make serve\nrf-generated\nsecond\n")
    assert key_found(keys_file, None).stdout.strip() == "rf-generated"
    assert key_found(keys_file, "from-env, other").stdout.strip() == "from-env"
    missing = key_found(tmp_path / "missing", None)
    assert missing.returncode == 1 and "holds none" in missing.stderr
