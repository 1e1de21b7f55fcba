"""The router's calibrated classifier evaluated with plain numpy, for one request at a time.

``CalibratedClassifierCV.predict_proba`` on a single prompt spends ~8 ms in scikit-learn's
per-call input checks (five folds, each a linear model and a calibrator per class), longer
than the rest of routing. :class:`CompiledSigmoidCalibration` reads the fitted folds
(linear decision function, Platt sigmoid per class) once and computes the same
probabilities, fold by fold as scikit-learn does, in microseconds. Only that combination
is compiled; anything else keeps scikit-learn's own ``predict_proba``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit


@dataclass(frozen=True)
class CalibratedFold:
    """One cross-validation fold: a linear decision function and a sigmoid per column."""

    weights: np.ndarray  # (n_features, n_columns)
    bias: np.ndarray  # (n_columns,)
    classes: np.ndarray  # the class index each decision column calibrates
    slopes: np.ndarray  # Platt's a per column
    offsets: np.ndarray  # Platt's b per column


class CompiledSigmoidCalibration:
    """``predict_proba`` of a fitted ``CalibratedClassifierCV(method="sigmoid")`` over a linear model."""

    def __init__(self, folds: list[CalibratedFold], n_classes: int):
        self.folds, self.n_classes = folds, n_classes

    @classmethod
    def from_sklearn(cls, classifier) -> "CompiledSigmoidCalibration | None":
        """Compile ``classifier``; None when it is not sigmoid calibration over linear models."""
        folds = getattr(classifier, "calibrated_classifiers_", None)
        if not folds or any(fold.method != "sigmoid" for fold in folds):
            return None
        estimators = [fold.estimator for fold in folds]
        if not all(hasattr(estimator, "coef_") and hasattr(estimator, "intercept_") for estimator in estimators):
            return None
        classes = np.asarray(classifier.classes_)
        compiled = []
        for fold in folds:
            estimator = fold.estimator
            # one decision column per calibrator; a binary decision function scores classes_[1]
            columns = np.array([1]) if len(classes) == 2 else np.searchsorted(classes, estimator.classes_)
            columns = columns[: len(fold.calibrators)]
            compiled.append(
                CalibratedFold(
                    weights=np.asarray(estimator.coef_).T,  # its dtype, as scikit-learn computes
                    bias=np.asarray(estimator.intercept_),
                    classes=columns,
                    slopes=np.array([calibrator.a_ for calibrator in fold.calibrators], dtype=np.float64),
                    offsets=np.array([calibrator.b_ for calibrator in fold.calibrators], dtype=np.float64),
                )
            )
        return cls(compiled, len(classes))

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, one row per vector, columns in ``classes_`` order."""
        total = np.zeros((len(vectors), self.n_classes))
        for fold in self.folds:
            total += self._fold_proba(fold, vectors)
        return total / len(self.folds)

    def _fold_proba(self, fold: CalibratedFold, vectors: np.ndarray) -> np.ndarray:
        decisions = vectors @ fold.weights + fold.bias
        proba = np.zeros((len(vectors), self.n_classes))
        proba[:, fold.classes] = expit(-(fold.slopes * decisions + fold.offsets))
        if self.n_classes == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
        else:
            denominator = proba.sum(axis=1, keepdims=True)
            uniform = np.full_like(proba, 1 / self.n_classes)
            proba = np.divide(proba, denominator, out=uniform, where=denominator != 0)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        return proba
