"""Training the router: split, embed, fit a calibrated classifier, choose the threshold, report.

The labelled prompts are split three ways, stratified by label: the classifier is fitted
(and calibrated by internal cross-validation) on ``train``, the confidence threshold is
chosen on ``validation``, and every figure of the report comes from ``test``, which
nothing was fitted or chosen on.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from sklearn.model_selection import train_test_split

from rayfleet.config import InputError
from rayfleet.retrieval.embedder import Embedder
from rayfleet.routing.router import RequestRouter


@dataclass
class Split:
    texts: list[str]
    labels: list[str]


def split_examples(
    texts: list[str], labels: list[str], validation_fraction: float, test_fraction: float, seed: int
) -> tuple[Split, Split, Split]:
    """Stratified train / validation / test splits.

    Raises:
        InputError: the fractions leave a split too small for the labels, or the train split with fewer than
            two rows of a label (the classifier needs two labels, its calibration's cross-validation two rows
            of each): said before training, not as a scikit-learn traceback.
    """
    fractions = f"validation_fraction={validation_fraction} and test_fraction={test_fraction}"
    rows = dict(sorted(Counter(labels).items()))
    try:
        rest_texts, test_texts, rest_labels, test_labels = train_test_split(
            texts, labels, test_size=test_fraction, stratify=labels, random_state=seed
        )
        share = validation_fraction / (1 - test_fraction)
        train_texts, val_texts, train_labels, val_labels = train_test_split(
            rest_texts, rest_labels, test_size=share, stratify=rest_labels, random_state=seed
        )
    except ValueError as error:  # a split smaller than the number of labels, a label with one row left
        raise InputError(f"{fractions} cannot split {len(texts)} rows {rows} three ways ({error}): "
                         "each split needs a row of each label: change the fractions or add rows"
                         ) from error  # fmt: skip
    in_train = Counter(train_labels)
    short = {label: in_train[label] for label in rows if in_train[label] < 2}
    if short:
        raise InputError(f"{fractions} leave the train split {len(train_texts)} of the {len(texts)} rows {rows}, "
                         f"and in it fewer than 2 rows of a label ({short}; training needs 2 of each): lower the "
                         "fractions or add rows of those labels")  # fmt: skip
    return Split(train_texts, train_labels), Split(val_texts, val_labels), Split(test_texts, test_labels)


def fit_classifier(
    vectors: np.ndarray, labels: list[str], regularization: float, calibration: str, folds: int, seed: int
):
    """Logistic regression on embeddings, calibrated by cross-validation (labels weighed evenly)."""
    base = LogisticRegression(C=regularization, class_weight="balanced", max_iter=2000, random_state=seed)
    smallest = min(labels.count(label) for label in set(labels))
    classifier = CalibratedClassifierCV(base, method=calibration, cv=max(2, min(folds, smallest)))
    return classifier.fit(vectors, labels)


def routed_accuracy(
    probabilities: np.ndarray, labels: list[str], classes: list[str], threshold: float, default_label: str
) -> float:
    """Share of requests that go where they belong when unsure ones go to ``default_label``."""
    best = probabilities.argmax(axis=1)
    routes = np.where(probabilities.max(axis=1) >= threshold, np.array(classes)[best], default_label)
    return float(np.mean(routes == np.array(labels)))


def choose_threshold(probabilities: np.ndarray, labels: list[str], classes: list[str], default_label: str) -> float:
    """The confidence threshold that routes the most validation requests right (the lowest on ties)."""
    candidates = np.unique(np.concatenate([[0.0], probabilities.max(axis=1)]))
    scores = [routed_accuracy(probabilities, labels, classes, threshold, default_label) for threshold in candidates]
    return float(candidates[int(np.argmax(scores))])


def train_router(
    train: Split, validation: Split, embedder: Embedder, default_label: str, regularization: float = 1.0,
    calibration: str = "sigmoid", folds: int = 5, seed: int = 0,
) -> RequestRouter:  # fmt: skip
    """Fit on ``train``, choose the threshold on ``validation``."""
    classifier = fit_classifier(embedder.embed(train.texts), train.labels, regularization, calibration, folds, seed)
    classes = [str(label) for label in classifier.classes_]
    probabilities = classifier.predict_proba(embedder.embed(validation.texts))
    threshold = choose_threshold(probabilities, validation.labels, classes, default_label)
    return RequestRouter(classifier, classes, threshold, default_label, embedder)


def evaluate(router: RequestRouter, test: Split) -> tuple[dict, np.ndarray]:
    """Figures on the held-out split, and its probabilities (for the calibration plot): ``per_label`` and
    ``confusion_matrix`` judge the classifier's top label, ``routed_*`` what is served once requests below
    the threshold go to the default label."""
    probabilities = router.probabilities(test.texts)
    predicted = [router.labels[i] for i in probabilities.argmax(axis=1)]
    per_label = classification_report(test.labels, predicted, labels=router.labels, output_dict=True, zero_division=0)
    majority = max(set(test.labels), key=test.labels.count)
    confident = probabilities.max(axis=1) >= router.threshold
    routed = [label if sure else router.default_label for label, sure in zip(predicted, confident)]
    routed_per_label = classification_report(
        test.labels, routed, labels=router.labels, output_dict=True, zero_division=0
    )
    report = {
        "accuracy": round(float(accuracy_score(test.labels, predicted)), 4),
        "macro_f1": round(
            float(f1_score(test.labels, predicted, labels=router.labels, average="macro", zero_division=0)), 4
        ),
        "routed_accuracy": round(
            routed_accuracy(probabilities, test.labels, router.labels, router.threshold, router.default_label), 4
        ),
        "sent_to_default": round(float(1 - confident.mean()), 4),
        "majority_baseline_accuracy": round(test.labels.count(majority) / len(test.labels), 4),
        "threshold": router.threshold,
        "default_label": router.default_label,
        "labels": router.labels,
        "per_label": {label: {k: round(v, 4) for k, v in per_label[label].items()} for label in router.labels},
        "confusion_matrix": {
            "labels": router.labels,
            "rows_true_columns_predicted": confusion_matrix(test.labels, predicted, labels=router.labels).tolist(),
        },
        "routed_per_label": {  # what is served: unsure requests go to the default label
            label: {k: round(v, 4) for k, v in routed_per_label[label].items()} for label in router.labels
        },
        "routed_confusion_matrix": {
            "labels": router.labels,
            "rows_true_columns_routed": confusion_matrix(test.labels, routed, labels=router.labels).tolist(),
        },
        "calibration": calibration_figures(probabilities, test.labels, router.labels),
        "test_size": len(test.labels),
    }
    return report, probabilities


FEW_EXAMPLES = 3  # a label's figures on one or two examples can only be 0, 0.5 or 1


def report_warnings(report: dict, validation: Split) -> list[str]:
    """What the report's figures cannot carry, in words: labels whose per-label figures rest on fewer than
    :data:`FEW_EXAMPLES` test examples, or whose threshold choice rests on that few validation examples, and
    a router that routes no better than always answering the test split's majority label."""
    warnings = []
    tested = {label: int(report["per_label"][label]["support"]) for label in report["labels"]}
    validated = {label: validation.labels.count(label) for label in report["labels"]}
    for split, counts in (("test", tested), ("validation", validated)):
        few = {label: count for label, count in counts.items() if count < FEW_EXAMPLES}
        if few:
            figures = "per-label figures" if split == "test" else "threshold's choice"
            warnings.append(f"the {figures} of these labels rest on fewer than {FEW_EXAMPLES} {split} examples "
                            f"{few}: too few to judge by; add rows of those labels")  # fmt: skip
    routed, majority = report["routed_accuracy"], report["majority_baseline_accuracy"]
    if routed <= majority:
        warnings.append(f"routed accuracy {routed} is no better than always answering the test split's majority "
                        f"label ({majority}): the router does nothing useful on this data")  # fmt: skip
    return warnings


def calibration_figures(probabilities: np.ndarray, labels: list[str], classes: list[str], bins: int = 10) -> dict:
    """Top-label reliability: mean confidence vs accuracy per confidence bin, and the expected calibration error."""
    confidence = probabilities.max(axis=1)
    correct = (np.array(classes)[probabilities.argmax(axis=1)] == np.array(labels)).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    curve, error = [], 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            curve.append(
                {
                    "confidence": round(float(confidence[members].mean()), 4),
                    "accuracy": round(float(correct[members].mean()), 4),
                    "count": int(members.sum()),
                }
            )
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return {"expected_calibration_error": round(float(error), 4), "top_label_curve": curve}


def calibration_plot(probabilities: np.ndarray, labels: list[str], classes: list[str]) -> bytes:
    """PNG: one-vs-rest reliability curve of each label and the top-label curve, against the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    truth = np.array(labels)
    for column, label in enumerate(classes):
        observed, predicted = calibration_curve(truth == label, probabilities[:, column], n_bins=8, strategy="quantile")
        axes.plot(predicted, observed, marker="o", label=label)
    top = calibration_figures(probabilities, labels, classes)["top_label_curve"]
    axes.plot(
        [p["confidence"] for p in top], [p["accuracy"] for p in top], marker="s", color="black", label="top label"
    )
    axes.set(
        xlabel="predicted probability",
        ylabel="observed frequency",
        title="Router calibration (held-out split)",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    axes.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
