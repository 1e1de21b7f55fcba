"""The promotion gate: an adapter version goes live only if it measurably beats the incumbent.

The incumbent is the currently promoted version, or the base model when none is. The
candidate must beat it on the primary metric by at least ``min_improvement`` (absolute,
on the mean), the gain must be more than noise (the lower end of its paired bootstrap
interval, questions resampled by document, above zero; questions from one document never
show that) and the candidate must not fall
behind on the guard metric by more than ``guard_tolerance``. The decision and every number
behind it are returned as a plain dict, which the evaluation job records in the registry
beside the version.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from rayfleet.config import BaseConfig

Metric = Literal["exact_match", "f1", "rouge_l", "judge"]
MIN_DOCUMENTS = 2  # documents the questions must come from for the gain's interval (by document) to mean anything
ROUNDING = 1e-9  # 0.35 - 0.33 is 0.0199999...: a gain exactly at the margin passes


class PromotionGateConfig(BaseConfig):
    """When an evaluated adapter may replace the promoted one."""

    enabled: bool = Field(True, description="Decide (and promote when it passes) after each evaluation.")
    primary_metric: Metric = Field("f1", description="The metric the candidate must improve.")
    min_improvement: float = Field(
        0.02,
        ge=0,
        description="Least absolute gain on the primary metric's mean (0: a tie passes, as a candidate that "
        "does no worse may replace the incumbent).",
    )
    guard_metric: Metric = Field("rouge_l", description="A metric the candidate must not regress.")
    guard_tolerance: float = Field(0.01, ge=0, description="Largest allowed absolute drop of the guard metric's mean.")
    require_significant_gain: bool = Field(
        True, description="The primary gain's paired bootstrap interval (by document) must lie above zero."
    )


def decide(
    candidate: dict[str, float],
    incumbent: dict[str, float],
    incumbent_name: str,
    config: PromotionGateConfig,
    gain_interval: dict[str, float] | None = None,
) -> dict:
    """Whether ``candidate`` (metric means) may replace ``incumbent``, and why, with the numbers.

    ``gain_interval`` is the paired bootstrap interval (``low``, ``high``) of the primary gain,
    resampled by document, and how many ``documents`` the questions come from (an interval over
    one document says nothing about another: such a gain is refused), which
    ``require_significant_gain`` needs.

    Raises:
        ValueError: a metric the gate needs is missing or not a number (a gate never passes on a guess).
    """
    primary, guard = config.primary_metric, config.guard_metric
    for name, scores in (("candidate", candidate), (incumbent_name, incumbent)):
        for metric in (primary, guard):
            if scores.get(metric) is None or not math.isfinite(scores[metric]):
                raise ValueError(f"the gate needs {metric!r} for {name}, which has no such score")
    if config.require_significant_gain and gain_interval is None:
        raise ValueError("the gate needs the primary gain's interval (require_significant_gain)")
    gain = candidate[primary] - incumbent[primary]
    guard_change = candidate[guard] - incumbent[guard]
    reasons = []
    if gain < config.min_improvement - ROUNDING:
        reasons.append(f"{primary} gain {gain:+.4f} is below the required {config.min_improvement:+.4f}")
    elif config.require_significant_gain and gain_interval.get("documents", MIN_DOCUMENTS) < MIN_DOCUMENTS:
        reasons.append(f"{primary} gain {gain:+.4f} cannot be told from noise: the questions come from "
                       f"{gain_interval['documents']} document(s), and an interval by document needs {MIN_DOCUMENTS} "
                       "or more")  # fmt: skip
    elif config.require_significant_gain and not gain_interval["low"] > 0:
        reasons.append(f"{primary} gain {gain:+.4f} is within noise: its interval "
                       f"[{gain_interval['low']:+.4f}, {gain_interval['high']:+.4f}] reaches zero")  # fmt: skip
    if guard_change < -config.guard_tolerance - ROUNDING:
        reasons.append(f"{guard} fell by {-guard_change:.4f}, more than the tolerated {config.guard_tolerance:.4f}")
    return {
        "promote": not reasons,
        "reason": "; ".join(reasons)
        or f"{primary} gain {gain:+.4f} and {guard} change {guard_change:+.4f} pass the gate",
        "incumbent": incumbent_name,
        "primary_metric": primary,
        "candidate_primary": candidate[primary],
        "incumbent_primary": incumbent[primary],
        "guard_metric": guard,
        "candidate_guard": candidate[guard],
        "incumbent_guard": incumbent[guard],
        "gain_interval": gain_interval,
        "min_improvement": config.min_improvement,
        "guard_tolerance": config.guard_tolerance,
    }
