"""Full precision against quantized, on the same prompts: size, peak memory, speed and quality."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.quantization.measure import GenerationRun, measure_generation, weights_size_bytes
from rayfleet.quantization.quality import QaPair, greedy_agreement, qa_f1


def compare_models(
    full_model: Path, quantized_model: Path, pairs: Sequence[QaPair], engine: EngineConfig, sampling: SamplingConfig
) -> dict:
    """Generate the held-out answers with each model (one fresh process each) and compare them.

    Returns:
        Flat figures: absolute ``*_full`` / ``*_quantized`` values, the ratios
        (quantized / full: ``size_ratio``, ``peak_memory_ratio``, ``speed_ratio``), token
        F1 of each against the references, and their greedy agreement.
    """
    conversations = [pair.conversation() for pair in pairs]
    runs: dict[str, GenerationRun] = {}
    for label, folder in (("full", full_model), ("quantized", quantized_model)):
        runs[label] = measure_generation(engine.model_copy(update={"model": str(folder)}), conversations, sampling)
    figures: dict[str, float | int | str] = {"engine": engine.kind, "prompts": len(pairs)}
    for label, folder in (("full", full_model), ("quantized", quantized_model)):
        run = runs[label]
        figures |= {
            f"size_bytes_{label}": weights_size_bytes(folder),
            f"peak_memory_bytes_{label}": run.peak_memory_bytes,
            f"tokens_per_s_{label}": round(run.tokens_per_second, 2),
            f"completion_tokens_{label}": run.completion_tokens,
            f"load_seconds_{label}": round(run.load_seconds, 1),
            f"f1_{label}": round(qa_f1(run.generations, pairs), 4),
        }
    figures |= {
        "size_ratio": round(figures["size_bytes_quantized"] / figures["size_bytes_full"], 3),
        "peak_memory_ratio": round(figures["peak_memory_bytes_quantized"] / figures["peak_memory_bytes_full"], 3),
        "speed_ratio": round(runs["quantized"].tokens_per_second / runs["full"].tokens_per_second, 3),
        **greedy_agreement(runs["full"].generations, runs["quantized"].generations),
    }
    return figures
