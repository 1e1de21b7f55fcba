"""Train the request router (which path a prompt takes) and write it to the registry.

Run it anywhere the same way::

    python -m jobs.train_router output=s3://bucket/registry/router            # the default set
    python -m jobs.train_router input=labelled.jsonl output=s3://bucket/registry/router
    ray job submit --working-dir . -- python -m jobs.train_router input=... output=...

Input: Parquet (a file or folder), JSONL, JSON or CSV of ``text,label`` rows with any set of two or
more labels (``rayfleet/routing/examples.py``); each text counts once (a repeated prompt would sit
in train and test both), a text labelled two ways takes its majority label. Without ``input`` the
default set is built from the project's own data (rag / finetuned / base). Output, under ``output``:

- ``model.joblib``: the calibrated classifier, its labels, threshold and default label;
- ``report.json``: accuracy, macro_f1, per-label precision/recall/F1, confusion matrix,
  calibration figures and the chosen threshold, all on the held-out split, and ``warnings``
  (also logged): labels whose figures rest on one or two examples, a router no better than
  always answering the majority label;
- ``calibration.png``: the calibration curves; ``heldout.parquet``: the held-out split
  (``python -m bench.router`` measures on it).
"""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa
from pydantic import Field

from rayfleet import storage
from rayfleet.config import BaseConfig, InputError, describe, run_job
from rayfleet.retrieval.embedder import Embedder
from rayfleet.routing.examples import clean_examples, default_examples, read_examples
from rayfleet.routing.training import calibration_plot, evaluate, report_warnings, split_examples, train_router
from rayfleet.tables import new_run_id, utc_now, write_table

logger = logging.getLogger("jobs.train_router")

DEFAULT_LABELS = ("rag", "finetuned", "base")


class TrainRouterConfig(BaseConfig):
    """Configuration of router training."""

    input: str | None = Field(
        None, description="Parquet or JSONL file of text,label rows; unset: build the default set."
    )
    output: str = Field(..., description="Registry folder for this router: model, report, plot (local or s3://).")
    labels: list[str] | None = Field(
        None,
        description="The labels the data must hold, exactly (a guard against typos); unset: whatever the data holds.",
    )
    default_label: str | None = Field(
        None,
        description="Path for requests below the confidence threshold; "
        "unset: 'base' if it is a label, else the most frequent label.",
    )
    default_set_per_label: int = Field(
        100, ge=10, description="Default set only: prompts per label (base has 60 at most)."
    )
    validation_fraction: float = Field(0.2, gt=0, lt=0.5, description="Share of rows for choosing the threshold.")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Share of rows held out for the report.")
    embedding_model: str = Field(
        "all-minilm-l6-v2-static",
        description="Embedding model (provisioned name or local sentence-transformers / model2vec folder); "
        "the static default routes a prompt in ~1 ms, the transformer all-minilm-l6-v2 in ~20 ms.",
    )
    regularization: float = Field(
        1.0, gt=0, description="Inverse regularization strength C of the logistic regression."
    )
    calibration: str = Field(
        "sigmoid", pattern="^(sigmoid|isotonic)$", description="Probability calibration: sigmoid (Platt) or isotonic."
    )
    calibration_folds: int = Field(
        5, ge=2, description="Cross-validation folds for calibration (fewer if a label is rare)."
    )
    seed: int = Field(0, description="Seed for the splits and the default set.")


def load_examples(config: TrainRouterConfig) -> tuple[list[str], list[str], str, dict[str, int]]:
    """The labelled prompts (one row per text: :func:`clean_examples`), where they came from, and what
    was dropped or relabelled."""
    if config.input is None:
        table = default_examples(config.default_set_per_label, config.seed)
        origin = "default set: aclsum papers (rag, finetuned, templated) + hand-written seed list (base)"
    else:
        table, origin = read_examples(config.input), config.input
    texts, labels, dropped = clean_examples(table["text"].to_pylist(), table["label"].to_pylist())
    if dropped:
        logger.warning("of %d labelled rows, dropped or relabelled: %s", table.num_rows, dropped)
    return texts, labels, origin, dropped


def check_labels(labels: list[str], config: TrainRouterConfig) -> str:
    """Validate the label set against the config; returns the default label.

    Raises:
        InputError: fewer than two labels or too few rows of one, a label the config names
            that the data lacks, or data labels the config does not name.
    """
    found = sorted(set(labels))
    if config.labels is not None:
        unknown, missing = sorted(set(found) - set(config.labels)), sorted(set(config.labels) - set(found))
        if unknown or missing:
            raise InputError(
                f"labels in the data {found} differ from labels={config.labels}: unknown {unknown}, absent {missing}"
            )
    if len(found) < 2:
        raise InputError(f"the router needs at least two labels; the data holds {found}")
    rare = {label: labels.count(label) for label in found if labels.count(label) < 5}
    if rare:
        raise InputError(f"labels with fewer than 5 rows cannot be split and calibrated: {rare}")
    default = config.default_label or ("base" if "base" in found else max(found, key=labels.count))
    if default not in found:
        raise InputError(f"default_label {default!r} is not one of the labels in the data {found}")
    return default


def main(config: TrainRouterConfig) -> dict:
    """Train, evaluate on the held-out split, write model, report and plot to ``config.output``.

    Returns:
        The report (also printed as one JSON line, without the curve points).
    """
    run_id, started = new_run_id(), time.monotonic()
    logger.info("run %s with config:\n%s", run_id, describe(config))
    texts, labels, origin, dropped = load_examples(config)
    default_label = check_labels(labels, config)
    train, validation, test = split_examples(
        texts, labels, config.validation_fraction, config.test_fraction, config.seed
    )
    logger.info(
        "%d examples (%s): %d train, %d validation, %d test",
        len(texts),
        origin,
        len(train.texts),
        len(validation.texts),
        len(test.texts),
    )
    embedder = Embedder(config.embedding_model)
    router = train_router(
        train,
        validation,
        embedder,
        default_label,
        config.regularization,
        config.calibration,
        config.calibration_folds,
        config.seed,
    )
    report, probabilities = evaluate(router, test)
    report["warnings"] = report_warnings(report, validation)
    for warning in report["warnings"]:
        logger.warning(warning)
    report.update(
        run_id=run_id, created_at=utc_now().isoformat(), examples=len(texts), examples_from=origin,
        examples_dropped=dropped, train_size=len(train.texts), validation_size=len(validation.texts),
        embedding_model=config.embedding_model,
        embedding_model_hash=embedder.fingerprint, seconds=round(time.monotonic() - started, 1),
        classifier=f"LogisticRegression + CalibratedClassifierCV({config.calibration})",
    )  # fmt: skip
    storage.ensure_bucket(config.output)
    router.save(config.output)
    write_table(storage.join(config.output, "heldout.parquet"), pa.table({"text": test.texts, "label": test.labels}))
    storage.write_bytes(
        storage.join(config.output, "calibration.png"), calibration_plot(probabilities, test.labels, router.labels)
    )
    storage.write_bytes(storage.join(config.output, "report.json"), json.dumps(report, indent=2).encode())
    logger.info(
        "router written to %s: accuracy %.3f, macro F1 %.3f, threshold %.3f",
        config.output,
        report["accuracy"],
        report["macro_f1"],
        report["threshold"],
    )
    print(json.dumps({key: value for key, value in report.items() if key != "calibration"}), flush=True)
    return report


if __name__ == "__main__":
    run_job(__spec__, "TrainRouterConfig")
