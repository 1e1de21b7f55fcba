"""jobs.train_router on a user's own label set (real text, four labels) into local storage (the
`ray job submit` test writes to S3), and its clear errors for a bad label configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.train_router import TrainRouterConfig, check_labels, main
from rayfleet import storage
from rayfleet.config import InputError
from rayfleet.routing import RequestRouter
from tests.routing.conftest import aspect_examples


def test_trains_on_any_label_set_and_writes_model_report_and_plot(tmp_path):
    rows = (
        aspect_examples(30)
        + [
            {"text": text, "label": "chitchat"}
            for text in (
                "Hi there!",
                "Thanks a lot.",
                "Good night!",
                "How are you?",
                "See you soon.",
                "Nice weather today.",
            )
        ]
        * 5
    )
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps(row) for row in rows))
    output = str(tmp_path / "registry" / "router")
    report = main(TrainRouterConfig(input=str(labelled), output=output))
    assert (
        report["labels"] == ["approach", "challenge", "chitchat", "outcome"] and report["default_label"] == "approach"
    )
    assert report["accuracy"] > report["majority_baseline_accuracy"]
    stored = json.loads(storage.read_bytes(storage.join(output, "report.json")))
    assert {"accuracy", "macro_f1", "per_label", "confusion_matrix", "threshold", "calibration"} <= set(stored)
    assert storage.read_bytes(storage.join(output, "calibration.png")).startswith(b"\x89PNG")
    assert RequestRouter.load(output).route("Hi there!").predicted == "chitchat"


def config(**values) -> TrainRouterConfig:
    return TrainRouterConfig(output="unused", **values)


def test_an_unknown_label_in_the_config_is_a_clear_error():
    labels = ["rag"] * 5 + ["base"] * 5 + ["finetuned"] * 5
    with pytest.raises(ValueError, match=r"unknown \['finetuned'\], absent \['fine-tuned'\]"):
        check_labels(labels, config(labels=["rag", "base", "fine-tuned"]))
    with pytest.raises(ValueError, match="default_label 'fallback' is not one of the labels"):
        check_labels(labels, config(default_label="fallback"))
    assert check_labels(labels, config(labels=["rag", "finetuned", "base"])) == "base"


def test_too_few_labels_or_rows_are_clear_errors():
    with pytest.raises(ValueError, match="at least two labels"):
        check_labels(["rag"] * 10, config())
    with pytest.raises(ValueError, match="fewer than 5 rows"):
        check_labels(["rag"] * 10 + ["base"] * 2, config())


def test_fractions_that_leave_too_little_to_train_on_are_refused_before_training(tmp_path):
    rows = [{"text": f"Question {n} about the paper?", "label": "rag"} for n in range(8)]
    rows += [{"text": f"Tell me joke number {n}.", "label": "base"} for n in range(8)]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps(row) for row in rows))
    output = tmp_path / "router"
    train_short = r"validation_fraction=0.3 and test_fraction=0.45 leave the train split 3 of the 16 rows .*fewer"
    with pytest.raises(InputError, match=train_short):  # scikit-learn: "2-fold cross-validation ... less than 2"
        main(TrainRouterConfig(input=str(labelled), output=str(output), validation_fraction=0.3, test_fraction=0.45))
    with pytest.raises(InputError, match=r"validation_fraction=0.45 and test_fraction=0.45 cannot split 16 rows"):
        main(TrainRouterConfig(input=str(labelled), output=str(output), validation_fraction=0.45, test_fraction=0.45))
    assert not output.exists()


def test_figures_on_a_few_examples_are_warned_of_in_the_log_and_the_report(tmp_path, caplog):
    rows = aspect_examples(10)[:20]  # challenge, approach and outcome summaries of real papers: 6 or 7 rows a label
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(json.dumps(row) for row in rows))
    output = str(tmp_path / "router")
    with caplog.at_level("WARNING", logger="jobs.train_router"):
        report = main(TrainRouterConfig(input=str(labelled), output=output))
    few = "the per-label figures of these labels rest on fewer than 3 test examples"
    assert any(warning.startswith(few) for warning in report["warnings"]), report["warnings"]
    assert any(record.getMessage().startswith(few) for record in caplog.records)
    assert json.loads(storage.read_bytes(storage.join(output, "report.json")))["warnings"] == report["warnings"]


def test_data_the_router_cannot_train_on_ends_the_command_with_its_message_not_a_traceback(tmp_path):
    (tmp_path / "one.jsonl").write_text(
        "\n".join(json.dumps({"text": f"question {n}?", "label": "rag"}) for n in range(9))
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "jobs.train_router", f"input={tmp_path}/one.jsonl", f"output={tmp_path}/out"],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error: the router needs at least two labels; the data holds ['rag']" in result.stderr
