"""lm-evaluation-harness tasks that exist locally, run through its Python API on a base model or an adapter.

No hub access: tasks come from YAML files under ``include_path`` (for example a task over
a local JSONL file with ``dataset_path: json`` and ``dataset_kwargs.data_files``), and the
model is a local folder, with a peft adapter folder applied when given.
"""

from __future__ import annotations

import math

from pydantic import Field

from rayfleet.config import BaseConfig


class HarnessConfig(BaseConfig):
    """Which local lm-evaluation-harness tasks to run on the base and adapter candidates."""

    tasks: list[str] = Field(default_factory=list, description="Task names; empty skips the harness.")
    include_path: str | None = Field(None, description="Folder of local task YAML files (besides the built-in ones).")
    limit: int | None = Field(None, ge=1, description="Score at most this many documents per task.")
    batch_size: int = Field(8, ge=1, description="Harness batch size.")


def run_harness(
    config: HarnessConfig, model_path: str, adapter_path: str | None = None, dtype: str = "float32"
) -> dict:
    """Every configured task's metrics (``{task: {metric: value}}``) for the model (+ adapter)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=config.include_path)
    unknown = [task for task in config.tasks if task not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-evaluation-harness has no task {unknown} (include_path={config.include_path!r})")
    model_args = f"pretrained={model_path},dtype={dtype}" + (f",peft={adapter_path}" if adapter_path else "")
    results = lm_eval.simple_evaluate(
        model="hf", model_args=model_args, tasks=config.tasks, task_manager=manager, limit=config.limit,
        batch_size=config.batch_size, device="cuda" if _cuda() else "cpu", log_samples=False,
    )  # fmt: skip
    return {task: _plain(metrics) for task, metrics in results["results"].items()}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _plain(metrics: dict) -> dict:
    """Metric values as JSON-friendly floats (``exact_match,none`` keeps its name); names and aliases dropped."""
    plain = {}
    for name, value in metrics.items():
        if name in ("name", "alias", "sample_len"):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):  # the harness writes "N/A" for stderrs it cannot compute
            continue
        plain[name] = None if math.isnan(number) else number
    return plain
