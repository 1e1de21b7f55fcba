"""Router training on real labelled text: beats the majority baseline, thresholds, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from rayfleet.retrieval import Embedder
from rayfleet.routing import RequestRouter
from rayfleet.routing.training import (
    Split,
    choose_threshold,
    evaluate,
    report_warnings,
    routed_accuracy,
    split_examples,
    train_router,
)


@pytest.fixture(scope="module", params=["all-minilm-l6-v2-static", "all-minilm-l6-v2"])
def embedder(request) -> Embedder:
    return Embedder(request.param)


@pytest.fixture(scope="module")
def trained(aspect_rows, embedder):
    texts, labels = [row["text"] for row in aspect_rows], [row["label"] for row in aspect_rows]
    train, validation, test = split_examples(texts, labels, 0.2, 0.3, seed=0)
    return train_router(train, validation, embedder, default_label="approach"), test


def test_split_is_stratified_and_disjoint(aspect_rows):
    texts, labels = [row["text"] for row in aspect_rows], [row["label"] for row in aspect_rows]
    train, validation, test = split_examples(texts, labels, 0.2, 0.2, seed=0)
    assert len(train.texts) + len(validation.texts) + len(test.texts) == len(texts)
    assert not set(train.texts) & set(test.texts) and not set(validation.texts) & set(test.texts)
    assert sorted(set(test.labels)) == ["approach", "challenge", "outcome"]
    assert (
        max(test.labels.count(label) for label in set(test.labels))
        - min(test.labels.count(label) for label in set(test.labels))
        <= 1
    )


def test_a_router_trained_on_a_small_labelled_set_beats_the_majority_class(trained):
    router, test = trained
    report, probabilities = evaluate(router, test)
    assert report["accuracy"] > report["majority_baseline_accuracy"] + 0.2
    assert report["macro_f1"] > 0.5
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    matrix = np.array(report["confusion_matrix"]["rows_true_columns_predicted"])
    assert matrix.sum() == len(test.labels) and np.trace(matrix) / matrix.sum() == pytest.approx(
        report["accuracy"], abs=1e-4
    )
    assert set(report["per_label"]) == {"approach", "challenge", "outcome"}
    routed = np.array(report["routed_confusion_matrix"]["rows_true_columns_routed"])
    assert np.trace(routed) / routed.sum() == pytest.approx(report["routed_accuracy"], abs=1e-4)
    default = router.labels.index(router.default_label)
    assert routed[:, default].sum() >= matrix[:, default].sum(), "the unsure requests join the default label's column"


def test_uncertain_requests_go_to_the_default_path(trained):
    router, test = trained
    router.threshold = 1.01  # nothing is that sure
    decision = router.route(test.texts[0])
    assert decision.route == "approach" and decision.confidence < 1.01
    assert decision.predicted == max(decision.probabilities, key=decision.probabilities.get)


def test_a_request_without_words_goes_to_the_default_path(trained):
    router, test = trained
    for text in ("", "   ", "🙂🙂", "?!…"):
        decision = router.route(text)
        assert (decision.route, decision.confidence) == (router.default_label, 0.0), text
    assert router.route("日本語の質問").confidence > 0, "letters of any script are words"


def test_a_decision_carries_the_embedding_the_classifier_read(trained, embedder):
    router, test = trained
    decisions = router.route_many(test.texts[:3])
    assert np.allclose(
        np.stack([decision.embedding for decision in decisions]), embedder.embed(test.texts[:3]), atol=1e-5
    )


def test_threshold_is_chosen_on_validation_to_route_the_most_requests_right():
    classes = ["base", "rag"]
    # Confident predictions are right; the two unsure ones are wrong, and really belong to base.
    probabilities = np.array([[0.05, 0.95], [0.9, 0.1], [0.45, 0.55], [0.4, 0.6], [0.1, 0.9]])
    labels = ["rag", "base", "base", "base", "rag"]
    threshold = choose_threshold(probabilities, labels, classes, default_label="base")
    assert 0.6 < threshold <= 0.9
    assert routed_accuracy(probabilities, labels, classes, threshold, "base") == 1.0
    assert choose_threshold(probabilities, ["rag", "base", "rag", "rag", "rag"], classes, "base") == 0.0


def test_save_and_load_round_trip(trained, embedder, tmp_path):
    router, test = trained
    router.save(str(tmp_path))
    loaded = RequestRouter.load(str(tmp_path), embedder=embedder)
    assert (loaded.labels, loaded.threshold, loaded.default_label) == (
        router.labels,
        router.threshold,
        router.default_label,
    )
    assert np.allclose(loaded.probabilities(test.texts[:5]), router.probabilities(test.texts[:5]))


def test_default_label_must_be_a_label(trained, embedder):
    router, _ = trained
    with pytest.raises(ValueError, match="'base' is not one of the router's labels"):
        RequestRouter(router.classifier, router.labels, 0.5, "base", embedder)


def test_split_needs_enough_rows_per_label():
    with pytest.raises(ValueError):
        split_examples(["a", "b", "c"], ["x", "x", "y"], 0.2, 0.2, seed=0)


def test_a_router_no_better_than_the_majority_label_or_judged_on_few_examples_is_warned_of():
    labels = ["base", "rag"]
    report = {"labels": labels, "per_label": {"base": {"support": 30.0}, "rag": {"support": 2.0}},
              "routed_accuracy": 0.9375, "majority_baseline_accuracy": 0.9375}  # fmt: skip
    warnings = report_warnings(report, Split(["a"] * 8, ["base"] * 5 + ["rag"] * 3))
    assert warnings == [
        "the per-label figures of these labels rest on fewer than 3 test examples {'rag': 2}: too few to judge by; "
        "add rows of those labels",
        "routed accuracy 0.9375 is no better than always answering the test split's majority label (0.9375): "
        "the router does nothing useful on this data",
    ]
    report |= {"routed_accuracy": 0.97, "per_label": {"base": {"support": 30.0}, "rag": {"support": 3.0}}}
    assert report_warnings(report, Split(["a"] * 8, ["base"] * 5 + ["rag"] * 3)) == []
