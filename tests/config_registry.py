"""Which config class validates which YAML folder (used by tests/test_config.py)."""

from __future__ import annotations

from pathlib import Path

from events.config import DispatchConfig
from jobs.ingest import IngestConfig
from jobs.make_qa import MakeQaConfig
from jobs.monitor import MonitorConfig
from jobs.build_index import BuildIndexConfig
from jobs.evaluate import EvaluateConfig
from jobs.finetune import FinetuneConfig
from jobs.summarize import SummarizeConfig
from jobs.train_router import TrainRouterConfig
from serve_apps.config import ServeConfigFile
from jobs.quantize import QuantizeConfig

# jobs/configs/<folder>/*.yaml -> the job's config class. Add a line for every new job.
CONFIG_CLASSES = {
    "summarize": SummarizeConfig,
    "dispatch": DispatchConfig,
    "ingest": IngestConfig,
    "make_qa": MakeQaConfig,
    "build_index": BuildIndexConfig,
    "train_router": TrainRouterConfig,
    "evaluate": EvaluateConfig,
    "monitor": MonitorConfig,
    "serve:configs": ServeConfigFile,  # serve_apps/configs/*.yaml: Serve config files of the OpenAI app
    "finetune": FinetuneConfig,
    "quantize": QuantizeConfig,
}


def config_class_for(path: Path):
    folder = f"serve:{path.parent.name}" if path.parent.parent.name == "serve_apps" else path.parent.name
    if folder not in CONFIG_CLASSES:
        raise KeyError(f"{path}: no config class registered for folder {folder!r} in tests/config_registry.py")
    return CONFIG_CLASSES[folder]
