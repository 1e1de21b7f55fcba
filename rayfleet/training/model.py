"""The LoRA model: a causal LM from a local folder with peft adapters on the configured modules.

QLoRA (a 4-bit base through bitsandbytes) needs a CUDA GPU; asked for anywhere else it
fails at once with a message that says so, before any weights are loaded.

On CPU two parts are swapped for cheaper ones that compute the same thing: attention
runs example by example within a packed row (``rayfleet.training.attention``), and the
LoRA dropout draws a random number per dropped element, not per element
(``rayfleet.training.dropout``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from rayfleet.config import BaseConfig
from rayfleet.training.attention import SEGMENT_SDPA
from rayfleet.training.dropout import use_gap_sampled_dropout


class LoraSettings(BaseConfig):
    """The LoRA adapter and how the frozen base is held."""

    rank: int = Field(16, ge=1, description="LoRA rank r of every adapted matrix.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input during training.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Names of the linear layers that get adapters (all attention and MLP projections of a Llama).",
    )
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit: QLoRA, the frozen base in 4-bit NF4 through bitsandbytes (CUDA GPU only)."
    )


class QuantizationUnavailableError(RuntimeError):
    """QLoRA was asked for where it cannot run."""


def training_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_quantization(settings: LoraSettings, device_type: str) -> None:
    """Fail at once when QLoRA is asked for off a CUDA GPU (``device_type`` "cpu"), or without bitsandbytes."""
    if settings.quantization == "none":
        return
    if device_type != "cuda":
        raise QuantizationUnavailableError(
            "lora.quantization=4bit (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit kernels do not run on "
            f"{device_type}. Set lora.quantization=none to train LoRA on a full-precision base here."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise QuantizationUnavailableError("lora.quantization=4bit needs the bitsandbytes package") from error


def build_lora_model(model_path: str, settings: LoraSettings, device: torch.device):
    """The base model with fresh LoRA adapters (B = 0, so it starts as the base model), on ``device``.

    The base stays in fp32 on the CPU (bf16 hurts SmolLM2 and is slower on these cores),
    with ``segment_sdpa`` attention; on a GPU it is loaded in bf16, or in 4-bit NF4 for
    QLoRA, with sdpa, which takes the packed block-diagonal mask (see ``rayfleet.training.data``).
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    check_quantization(settings, device.type)
    on_cpu = device.type == "cpu"
    options: dict = {"attn_implementation": SEGMENT_SDPA if on_cpu else "sdpa",
                     "dtype": torch.float32 if on_cpu else torch.bfloat16}  # fmt: skip
    if settings.quantization == "4bit":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        options["device_map"] = {"": device.index or 0}
    model = AutoModelForCausalLM.from_pretrained(model_path, **options)
    if settings.quantization == "4bit":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if on_cpu:
        use_gap_sampled_dropout(model)
    return model if settings.quantization == "4bit" else model.to(device)
