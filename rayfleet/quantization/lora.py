"""Do LoRA adapters trained on the full-precision base still work on its quantized checkpoint?

Two separate questions, both recorded:

1. **Can the serving engine apply the adapter to this checkpoint at all?** vLLM 0.32 on
   CPU cannot for ``w8a8_int8``: its oneDNN int8 kernel prepacks the weights and sets
   ``layer.weight = None``, and its LoRA layers read ``base_layer.weight.device`` at start
   (``AttributeError`` in ``vllm/lora/layers/utils.py``). ``tests/quantization`` keeps
   that fact honest by starting the engine on such a pair.
2. **Is the adapter numerically compatible with the quantized weights?** The transformers
   engine loads the compressed-tensors checkpoint with peft on top; the adapter on the
   quantized base is compared to the adapter on the full-precision base: greedy token
   agreement, and token F1 of both on held-out QA.

A pair fails when either answer is no; the verdict records the reason and what to do instead
(serve the adapter on the full-precision base, or merge it into the base first and quantize
the merged model). :func:`require_lora_capable_engine` refuses, at serving start, an engine
that enables LoRA on a checkpoint it cannot apply it to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from pydantic import Field

from rayfleet.config import BaseConfig
from rayfleet.engines import EngineConfig, SamplingConfig, create_engine
from rayfleet.engines.vllm_engine import cpu_has_amx, is_int8_checkpoint
from rayfleet.quantization.quality import QaPair, agreement_failures, greedy_agreement, qa_f1

VLLM_CPU_INT8_LORA = (
    "vLLM 0.32 on a CPU without AMX cannot apply LoRA to an int8 (W8A8) checkpoint: its oneDNN kernel releases "
    "layer.weight after prepacking and its LoRA layers need it (its AMX kernel, on Sapphire Rapids and later, can)"
)
MERGE_REMEDY = "merge it into the base (the fine-tuning job's merged export) and quantize the merged model"
REMEDY = f"serve the adapter on the full-precision base, or {MERGE_REMEDY}"


class IncompatibleAdapterError(ValueError):
    """A LoRA adapter that must not be served on a quantized checkpoint; the message says why."""


class LoraCheckConfig(BaseConfig):
    """How an adapter is checked against a quantized base, and what passes."""

    max_tokens: int = Field(48, ge=1, description="Most new tokens per held-out answer.")
    min_prefix_agreement: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Least mean share of greedy tokens the quantized pair generates as the fp pair does.",
    )
    max_f1_drop: float = Field(
        0.05, ge=0, le=1, description="Most held-out token F1 the quantized pair may lose against the fp pair."
    )


@dataclass(frozen=True)
class LoraCompatibility:
    """The recorded verdict on one adapter and one quantized checkpoint."""

    adapter: str
    serving_engine_applies_lora: bool
    prefix_agreement: float
    identical_share: float
    f1_full: float
    f1_quantized: float
    compatible: bool
    reason: str

    def record(self) -> dict:
        return asdict(self)


def int8_weights_fit_amx_kernel(model_folder: Path) -> bool:
    """Whether vLLM's AMX int8 kernel takes every int8 weight of the checkpoint (``n % 16 == 0`` and
    ``k % 32 == 0``, vLLM's ``check_cpu_sgl_kernel``); a weight it does not take goes to oneDNN."""
    from safetensors import safe_open

    for file in sorted(model_folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as tensors:
            for name in tensors.keys():
                weight = tensors.get_slice(name)
                if weight.get_dtype() == "I8" and len(shape := weight.get_shape()) == 2:
                    if shape[0] % 16 or shape[1] % 32:
                        return False
    return True


def vllm_lora_problem(model_folder: Path, on_gpu: bool, amx: bool | None = None) -> str | None:
    """Why vLLM cannot apply LoRA on this checkpoint here, or None when it can.

    Args:
        amx: whether the CPU has AMX (None: this machine's). With AMX, vLLM multiplies int8
            weights with its AMX kernel, under which LoRA works; without, with oneDNN, under which it does not.
    """
    if on_gpu or not is_int8_checkpoint(model_folder):
        return None
    if (cpu_has_amx() if amx is None else amx) and int8_weights_fit_amx_kernel(model_folder):
        return None
    return VLLM_CPU_INT8_LORA


def require_lora_capable_engine(model_folder: Path, max_loras: int, on_gpu: bool, amx: bool | None = None) -> None:
    """Refuse to start a vLLM engine with LoRA enabled (``max_loras`` > 0) on a checkpoint it cannot apply LoRA to.

    The engine would otherwise fail deep inside vLLM's start (``'NoneType' object has no
    attribute 'device'``), or, were LoRA silently turned off, fail every adapter request later.

    Raises:
        IncompatibleAdapterError: with the reason and both ways out.
    """
    problem = vllm_lora_problem(model_folder, on_gpu, amx) if max_loras > 0 else None
    if problem:
        raise IncompatibleAdapterError(
            f"refusing to start an engine on {model_folder} with max_loras={max_loras}: {problem}. Set max_loras: 0 "
            "on this engine (engines.<name>.max_loras in the serve config) to serve the quantized model without "
            "adapters, and give adapter paths an engine on the full-precision base; or, for one adapter, "
            + MERGE_REMEDY
        )


def check_lora_compatibility(
    full_model: Path,
    quantized_model: Path,
    adapter: str,
    pairs: Sequence[QaPair],
    config: LoraCheckConfig,
    on_gpu: bool,
    amx: bool | None = None,
) -> LoraCompatibility:
    """Generate the held-out answers with the adapter on both bases and judge the pair
    (``amx``: whether the serving CPU has AMX; None: this machine's)."""
    sampling = SamplingConfig(max_tokens=config.max_tokens)
    conversations = [pair.conversation() for pair in pairs]
    outputs = {}
    for label, model in (("full", full_model), ("quantized", quantized_model)):
        engine = create_engine(EngineConfig(kind="transformers", model=str(model), adapter=adapter))
        outputs[label] = engine.generate(conversations, sampling)
        engine.close()
    agreement = greedy_agreement(outputs["full"], outputs["quantized"])
    f1_full, f1_quantized = qa_f1(outputs["full"], pairs), qa_f1(outputs["quantized"], pairs)
    serving_problem = vllm_lora_problem(quantized_model, on_gpu, amx)
    reasons = [serving_problem] if serving_problem else []
    reasons += agreement_failures(
        agreement["prefix_agreement"], f1_full, f1_quantized, config.min_prefix_agreement, config.max_f1_drop
    )
    return LoraCompatibility(
        adapter=adapter,
        serving_engine_applies_lora=serving_problem is None,
        prefix_agreement=agreement["prefix_agreement"],
        identical_share=agreement["identical_share"],
        f1_full=round(f1_full, 4),
        f1_quantized=round(f1_quantized, 4),
        compatible=not reasons,
        reason="; ".join(reasons) + f"; {REMEDY}" if reasons else "compatible",
    )
