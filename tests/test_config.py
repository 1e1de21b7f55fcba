"""Config loading: defaults, YAML files, overrides, loud failures, and every YAML in the repo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.summarize import SummarizeConfig
from rayfleet.config import ConfigError, config_or_exit, load_config, parse_override, read_yaml
from rayfleet.tables import write_table
from tests.config_registry import CONFIG_CLASSES, config_class_for

REPO = Path(__file__).resolve().parents[1]


def test_overrides_are_typed_by_yaml():
    assert parse_override("engine.max_model_len=4096") == (["engine", "max_model_len"], 4096)
    assert parse_override("flag=true") == (["flag"], True)
    assert parse_override("input=s3://bucket/key") == (["input"], "s3://bucket/key")


def test_a_text_field_keeps_its_value_as_typed_where_yaml_would_change_it():
    """A path with `` #`` (YAML drops it as a comment), a folder named ``2024.01`` or ``yes``: the job gets
    what was typed; quoted values and the fields that take numbers or lists are still YAML's."""
    config = load_config(SummarizeConfig, ["input=in/2024.01", "output=out/run #1", "engine.max_model_len=1024"])
    assert (config.input, config.output, config.engine.max_model_len) == ("in/2024.01", "out/run #1", 1024)
    assert load_config(SummarizeConfig, ["input=yes", "output=2024.01"]).model_dump()["output"] == "2024.01"
    assert load_config(SummarizeConfig, ["input=yes", "output='quoted #1'"]).output == "quoted #1"
    assert parse_override("output=out #1", SummarizeConfig) == (["output"], "out #1")
    assert parse_override("engine.max_model_len=4096 # a comment", SummarizeConfig) == (
        ["engine", "max_model_len"],
        4096,
    )
    with pytest.raises(ConfigError, match="max_model_len"):
        load_config(SummarizeConfig, ["input=yes", "output=out", "engine.max_model_len=many"])


def test_an_override_or_a_file_changes_only_the_keys_it_names_in_a_section_the_job_defaults_its_own_way(tmp_path):
    """The evaluation's judge samples with a verdict format and the fine-tuning job trains 40 steps, not
    what their section classes default to: a section given in part keeps the job's defaults for the rest."""
    from jobs.evaluate import EvaluateConfig
    from jobs.finetune import FinetuneConfig

    plain = load_config(EvaluateConfig, [])
    changed = load_config(EvaluateConfig, ["judge.sampling.max_tokens=48", "sampling.temperature=0"])
    assert plain.judge.sampling.regex and plain.judge.sampling.max_tokens != 48
    assert changed.judge.sampling.model_dump() == plain.judge.sampling.model_dump() | {"max_tokens": 48}
    assert changed.sampling.model_dump() == plain.sampling.model_dump()
    steps = load_config(FinetuneConfig, []).train.max_steps
    (tmp_path / "preset.yaml").write_text("train:\n  gradient_accumulation_steps: 2\n")
    for arguments in (["train.learning_rate=1e-4"], [f"config={tmp_path}/preset.yaml"]):
        assert load_config(FinetuneConfig, arguments).train.max_steps == steps, arguments
    assert EvaluateConfig.model_validate({"judge": {"enabled": False}}).judge.sampling == plain.judge.sampling


def test_embedded_defaults_and_nested_override():
    config = load_config(
        SummarizeConfig, ["input=in", "output=out", "engine.max_model_len=1024", "sampling.max_tokens=64"]
    )
    assert config.engine.max_model_len == 1024
    assert config.sampling.max_tokens == 64
    assert config.engine.kind == "auto"
    assert config.errors_uri.endswith("_errors")


def test_help_lists_every_setting_with_its_default_and_ends_with_status_0(capsys):
    with pytest.raises(SystemExit) as ended:
        config_or_exit(SummarizeConfig, ["input=x", "--help"])
    page = capsys.readouterr().out
    assert ended.value.code == 0 and page.startswith(
        "usage: python -m jobs.summarize [config=FILE.yaml] [key.sub=value ...]"
    )
    assert "\n  input = required: " in page and "\n  engine.max_model_len = 2048: " in page
    assert "\n  sampling.max_tokens = 160: " in page, "the job's own default for the section, not the class's"


def test_typo_fails_loudly():
    with pytest.raises(ConfigError, match="engine.max_model_lenn|max_model_lenn"):
        load_config(SummarizeConfig, ["input=in", "output=out", "engine.max_model_lenn=1024"])


def test_each_problem_is_one_line_at_the_key_as_typed_without_pydantics_codes_and_links():
    with pytest.raises(ConfigError) as refused:
        load_config(SummarizeConfig, ["output=out", "engine.max_model_lenn=1024", "batch_size=0"])
    lines = str(refused.value).splitlines()
    assert lines[0] == "invalid SummarizeConfig:" and len(lines) == 4, lines
    assert "  input: Field required" in lines
    assert "  engine.max_model_lenn: Extra inputs are not permitted (given 1024)" in lines
    assert any(line.startswith("  batch_size: Input should be greater than or equal to 1 (given 0)") for line in lines)
    assert "errors.pydantic.dev" not in str(refused.value) and "type=" not in str(refused.value)


def test_a_command_with_a_typo_ends_with_the_message_and_status_2_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "jobs.summarize", "input=in", "output=out", "engine.max_model_lenn=1024"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid SummarizeConfig") and "max_model_lenn" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_job_whose_input_or_adapter_is_missing_ends_with_the_message_and_status_1_not_a_traceback(tmp_path):
    def evaluate(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jobs.evaluate", f"registry={tmp_path}/registry", "judge.enabled=false", *overrides],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    missing = evaluate(f"qa={tmp_path}/nowhere")
    assert (missing.returncode, "Traceback" in missing.stderr) == (1, False), missing.stderr[-2000:]
    assert f"error: no Q&A set at {tmp_path}/nowhere" in missing.stderr
    (tmp_path / "qa").mkdir()
    write_table(
        str(tmp_path / "qa" / "qa.parquet"),
        pa.Table.from_pylist([{"question": "Why?", "answer": "So.", "doc_id": "d"}]),
    )
    unknown = evaluate(f"qa={tmp_path}/qa", "candidates=[{name: tuned, kind: adapter, adapter: nobody@latest}]")
    assert (unknown.returncode, "Traceback" in unknown.stderr) == (1, False), unknown.stderr[-2000:]
    assert "error: candidate 'tuned':" in unknown.stderr and "nobody" in unknown.stderr


def test_an_unusable_s3_setting_ends_a_job_with_the_message_and_status_1_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "jobs.summarize", "input=s3://bucket/in", "output=s3://bucket/out"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "AWS_MAX_ATTEMPTS": "many"}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert (result.returncode, "Traceback" in result.stderr) == (1, False), result.stderr[-2000:]
    assert "error: AWS_MAX_ATTEMPTS must be a whole number of at least 1, not 'many'" in result.stderr


def test_an_s3_endpoint_that_does_not_answer_ends_a_job_with_one_line_and_status_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jobs.monitor", "logs=s3://rayfleet/logs", f"output={tmp_path}/out"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"},
    )  # fmt: skip
    assert (result.returncode, "Traceback" in result.stderr) == (1, False), result.stderr[-2000:]
    assert "error: cannot reach S3 at http://127.0.0.1:9 after 1 attempts (is it running?" in result.stderr


def test_no_parquet_an_output_behind_a_file_or_no_model_ends_a_job_with_one_line_and_status_1(tmp_path):
    def summarize(source: Path, output: Path, *overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "jobs.summarize", f"input={source}", f"output={output}", *overrides],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    spark_empty = tmp_path / "empty_dataset"
    spark_empty.mkdir()
    (spark_empty / "_SUCCESS").write_bytes(b"")
    no_parquet = summarize(spark_empty, tmp_path / "summaries")
    assert (no_parquet.returncode, "Traceback" in no_parquet.stderr) == (1, False), no_parquet.stderr[-2000:]
    assert (
        f"error: no Parquet files (*.parquet, *.parq, *.pq, or Parquet without an extension) at {spark_empty}"
        in no_parquet.stderr
    )
    assert not (tmp_path / "summaries").exists(), "an input without Parquet leaves no output folder behind"
    (tmp_path / "docs").mkdir()
    write_table(str(tmp_path / "docs" / "d.parquet"), pa.Table.from_pylist([{"doc_id": "d", "text": "Some text."}]))
    (tmp_path / "a_file").write_text("in the way")
    blocked = summarize(tmp_path / "docs", tmp_path / "a_file" / "summaries")
    assert (blocked.returncode, "Traceback" in blocked.stderr) == (1, False), blocked.stderr[-2000:]
    assert f"error: cannot make the folder {tmp_path}/a_file/summaries: a file is in the way" in blocked.stderr
    mistyped = summarize(tmp_path / "docz", tmp_path / "fresh_output")
    assert (mistyped.returncode, mistyped.stderr.strip().splitlines()[-1]) == (
        1,
        f"error: no file or folder at {tmp_path}/docz",
    )
    assert not (tmp_path / "fresh_output").exists()
    no_model = summarize(tmp_path / "docs", tmp_path / "summaries", "engine.model=no-such-model")
    assert (no_model.returncode, "Traceback" in no_model.stderr) == (1, False), no_model.stderr[-2000:]
    assert "error: model 'no-such-model' is not a local folder" in no_model.stderr
    assert "Started a local Ray instance" not in no_model.stderr, "found before Ray starts, not as a dead actor"


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(SummarizeConfig, ["input=in", "output=out", "batch_size=many"])


def test_missing_required_key():
    with pytest.raises(ConfigError, match="output"):
        load_config(SummarizeConfig, ["input=in"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(SummarizeConfig, ["input"])


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("input: a\noutput: b\nbatch_size: 7\nengine:\n  kind: transformers\n")
    config = load_config(SummarizeConfig, [f"config={path}", "batch_size=9"])
    assert (config.batch_size, config.engine.kind, config.input) == (9, "transformers", "a")


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(SummarizeConfig, ["config=/no/such/file.yaml"])


def yaml_files() -> list[Path]:
    roots = [REPO / "jobs" / "configs", REPO / "serve_apps" / "configs"]
    return sorted(path for root in roots if root.exists() for path in root.rglob("*.y*ml"))


def test_there_are_config_files_to_check():
    assert yaml_files(), "no YAML configs found under jobs/configs or serve_apps/configs"


@pytest.mark.parametrize("path", yaml_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_every_yaml_config_validates(path):
    config_class = config_class_for(path)
    # Job configs may leave input/output to the command line; give placeholders for those.
    in_file = read_yaml(path)
    required = [
        name for name, field in config_class.model_fields.items() if field.is_required() and name not in in_file
    ]
    placeholders = [f"{name}=placeholder-{name}" for name in required]  # distinct: input and output may not overlap
    config = load_config(config_class, placeholders + [f"config={path}"])
    assert isinstance(config, config_class)


def test_registry_names_real_config_classes():
    for folder, config_class in CONFIG_CLASSES.items():
        assert (REPO / "jobs" / "configs" / folder).is_dir() or folder.startswith("serve:"), folder
        assert config_class.model_config["extra"] == "forbid"
