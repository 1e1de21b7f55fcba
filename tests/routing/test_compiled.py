"""The compiled calibrated classifier gives scikit-learn's probabilities, for any label count."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression

from rayfleet.routing.compiled import CompiledSigmoidCalibration


def fitted(n_classes: int, method: str = "sigmoid", folds: int = 5) -> tuple[CalibratedClassifierCV, np.ndarray]:
    generator = np.random.default_rng(n_classes)
    centers = generator.normal(size=(n_classes, 16))
    labels = generator.integers(0, n_classes, size=300)
    vectors = (centers[labels] + generator.normal(scale=1.5, size=(300, 16))).astype(np.float32)
    names = np.array([f"path-{index}" for index in range(n_classes)])[labels]
    classifier = CalibratedClassifierCV(LogisticRegression(max_iter=1000), method=method, cv=folds)
    return classifier.fit(vectors[:200], names[:200]), vectors[200:]


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_compiled_probabilities_equal_sklearns(n_classes):
    classifier, vectors = fitted(n_classes)
    compiled = CompiledSigmoidCalibration.from_sklearn(classifier)
    assert compiled is not None and len(compiled.folds) == 5
    expected = classifier.predict_proba(vectors)
    assert np.allclose(compiled.predict_proba(vectors), expected, rtol=0, atol=1e-9)
    assert np.allclose(compiled.predict_proba(vectors[:1]), classifier.predict_proba(vectors[:1]), rtol=0, atol=1e-9)
    assert 0.05 < expected.max(axis=1).mean() < 1.0  # not a degenerate fit


def test_other_calibrations_are_left_to_sklearn():
    classifier, _ = fitted(3, method="isotonic")
    assert CompiledSigmoidCalibration.from_sklearn(classifier) is None
    assert CompiledSigmoidCalibration.from_sklearn(LogisticRegression()) is None
