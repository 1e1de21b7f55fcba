"""``python -m serve_apps.cli``: the Serve config file with ``app.`` overrides, validated before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayfleet.config import ConfigError
from serve_apps.cli import ServeCliConfig, down, serve_file

LOCAL = str(Path(__file__).resolve().parents[2] / "serve_apps" / "configs" / "local.yaml")


def test_app_overrides_point_the_shipped_config_at_your_own_artifacts():
    file = serve_file(LOCAL, [
        "app.paths.rag.index=s3://acme/index", "app.paths.rag.min_score=auto",
        "app.router.relevance.index=s3://acme/index", "app.router.model=s3://acme/registry/router",
    ])  # fmt: skip
    args = file.applications[0].args
    assert args.paths["rag"].index == "s3://acme/index" and args.paths["rag"].min_score == "auto"
    assert args.router.relevance.index == "s3://acme/index" and args.router.relevance.min_score == "auto"
    assert args.router.model == "s3://acme/registry/router"
    assert args.paths["base"] == serve_file(LOCAL).applications[0].args.paths["base"], "the rest is as shipped"


@pytest.mark.parametrize(
    "override, complaint",
    [
        ("app.paths.rag.top_k=0", "top_k"),
        ("app.router.relevance.min_score=2", "less than or equal to 1"),
        ("app.paths", "key.sub=value"),
    ],
)
def test_bad_overrides_are_refused_with_the_key_named(override, complaint):
    with pytest.raises(ConfigError, match=complaint):
        serve_file(LOCAL, [override])


def test_text_settings_keep_what_was_typed():
    """YAML reads `#` as a comment and 2024.01 as a number: the index would have been `s3://acme/my index`."""
    file = serve_file(LOCAL, ["app.paths.rag.index=s3://acme/my index #2", "app.router.model=2024.01"])
    args = file.applications[0].args
    assert (args.paths["rag"].index, args.router.model) == ("s3://acme/my index #2", "2024.01")
    assert serve_file(LOCAL, ["app.paths.rag.top_k=3"]).applications[0].args.paths["rag"].top_k == 3


def test_a_mistake_in_the_app_is_one_line_before_anything_starts():
    from serve_apps.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["up", "address=127.0.0.1:9", "app.ingress.limits.default_max_tokens=999"])
    message = str(ended.value.code)
    assert message.startswith("error: invalid serve config") and "default_max_tokens 999 is above max_tokens" in message
    assert "Traceback" not in message


def test_a_typo_in_the_app_is_named_as_typed_and_the_prefix_hint_is_kept_for_keys_without_it():
    from serve_apps.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["up", "address=127.0.0.1:9", "app.paths.rag.indx=/tmp/index"])
    message = str(ended.value.code)
    # pydantic says applications.0.args.paths.rag.rag.indx: the second "rag" is the kind of path it tried
    assert "\n  app.paths.rag.indx: Extra inputs are not permitted (given '/tmp/index')" in message
    assert "rag.rag" not in message and "errors.pydantic.dev" not in message and "prefix app." not in message
    with pytest.raises(SystemExit) as ended:
        main(["up", "address=127.0.0.1:9", "paths.rag.index=/tmp/index"])
    assert "the app's settings take the prefix app." in str(ended.value.code)


def test_stopping_serve_where_no_ray_head_answers_says_so_at_once(capsys):
    """``ray.init`` waits for a head that is not there for ever: ``make serve-down`` after ``make ray-down`` hung."""
    down(ServeCliConfig(address="127.0.0.1:9"))  # nothing listens there
    assert capsys.readouterr().out.strip() == "no Ray head answers at 127.0.0.1:9: no Serve application to stop"
