"""The LoRA model: a causal LM from a local folder with peft adapters on the configured modules.

QLoRA (a 4-bit base through bitsandbytes) needs a CUDA GPU; asked for anywhere else it
fails at once with a message that says so, before any weights are loaded.

Attention runs example by example within a packed row everywhere
(``rayfleet.training.attention``: flash kernels on a GPU, no cross-example work on a
CPU). On CPU the LoRA dropout draws a random number per dropped element, not per
element (``rayfleet.training.dropout``). On a GPU each decoder layer and the loss are
compiled with ``torch.compile`` (norms, rotary, activations, LoRA branches and the
cross-entropy's fp32 upcast fused; attention stays outside the graph), which
``lora.compile`` can switch off.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from rayfleet.config import BaseConfig, InputError
from rayfleet.training.attention import SEGMENT_SDPA
from rayfleet.training.dropout import use_gap_sampled_dropout

# The layer types peft's LoRA adapts (with transformers' GPT-2 style Conv1D, added where it is read).
LORA_LAYER_TYPES = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)


class LoraSettings(BaseConfig):
    """The LoRA adapter and how the frozen base is held."""

    rank: int = Field(16, ge=1, description="LoRA rank r of every adapted matrix.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input during training.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="Names of the linear layers that get adapters (all attention and MLP projections of a Llama).",
    )
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit: QLoRA, the frozen base in 4-bit NF4 through bitsandbytes (CUDA GPU only)."
    )
    compile: Literal["auto"] | bool = Field(
        "auto",
        description="torch.compile each decoder layer and the loss (true/on, false/off); auto: on a CUDA GPU "
        "without QLoRA, off elsewhere.",
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


def check_target_modules(model_path: str, settings: LoraSettings) -> None:
    """Fail at once when a name in ``target_modules`` matches no layer of the model (read on the meta
    device: no weights). peft would fail in every worker on a list that matches nothing, and skip
    without a word the names that match nothing in a list where others match.

    Raises:
        InputError: naming the unmatched names and the model's layer names, or those that name layers
            LoRA cannot adapt (norms, activations: peft takes linear, embedding and convolution layers).
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    adaptable_types = (*LORA_LAYER_TYPES, Conv1D)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    layers = {name: module for name, module in model.named_modules() if name and not list(module.children())}
    matches = {target: [layers[name] for name in layers if name == target or name.endswith(f".{target}")]
               for target in settings.target_modules}  # fmt: skip
    unmatched = [target for target, found in matches.items() if not found]
    adaptable = sorted(
        {name.rsplit(".", 1)[-1] for name, module in layers.items() if isinstance(module, adaptable_types)}
    )
    if unmatched:
        raise InputError(f"lora.target_modules {unmatched} match no layer of {model_path}; its layers LoRA can adapt "
                         f"are named {adaptable}")  # fmt: skip
    unadaptable = [
        target for target, found in matches.items() if not all(isinstance(m, adaptable_types) for m in found)
    ]
    if unadaptable:
        raise InputError(f"lora.target_modules {unadaptable} name layers LoRA cannot adapt (norms, activations, "
                         f"rotary embeddings); the adaptable layers of {model_path} are named {adaptable}")  # fmt: skip


def build_lora_model(model_path: str, settings: LoraSettings, device: torch.device):
    """The base model from ``model_path`` with fresh LoRA adapters, on ``device`` (see ``add_lora``).

    The base stays in fp32 on the CPU (bf16 hurts SmolLM2 and is slower on these cores);
    on a GPU it is loaded in bf16, or in 4-bit NF4 for QLoRA.
    """
    from transformers import AutoModelForCausalLM

    check_quantization(settings, device.type)
    options: dict = {"attn_implementation": SEGMENT_SDPA,
                     "dtype": torch.float32 if device.type == "cpu" else torch.bfloat16}  # fmt: skip
    if settings.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        options["device_map"] = {"": device.index or 0}
    return add_lora(AutoModelForCausalLM.from_pretrained(model_path, **options), settings, device)


def peft_lora_config(settings: LoraSettings):
    """peft's ``LoraConfig`` for a causal LM with these settings (rank, alpha, dropout, target modules)."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )


def add_lora(base_model, settings: LoraSettings, device: torch.device):
    """``base_model`` with fresh LoRA adapters (B = 0, so it starts as the base model), on ``device``.

    Attention becomes ``segment_sdpa``; the CPU gets gap-sampled dropout, a GPU skips peft's
    fp32 copies of the adapters' inputs, and the decoder layers and the loss are compiled
    where ``settings.compile`` says so.
    """
    from peft import get_peft_model

    check_quantization(settings, device.type)
    base_model.set_attn_implementation(SEGMENT_SDPA)
    if settings.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        base_model = prepare_model_for_kbit_training(base_model, use_gradient_checkpointing=False)
    model = get_peft_model(base_model, peft_lora_config(settings))
    if device.type == "cpu":
        use_gap_sampled_dropout(model)
    elif settings.quantization == "none":
        skip_adapter_input_casts(model)
    if settings.quantization != "4bit":
        model = model.to(device)
    if compiles(settings, device):
        compile_model(model)
    return model


def skip_adapter_input_casts(model) -> None:
    """Leave each adapter's input in the base's dtype (bf16 on a GPU) instead of peft's fp32 copy.

    peft casts a layer's input to its adapter's dtype (fp32) before the dropout; under the
    loop's bf16 autocast the adapter's matrix product casts it straight back, so the copy
    only costs memory traffic: two passes over every adapted activation, forward and
    backward. The result is the same; the model must run under autocast, as the loop does.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def compiles(settings: LoraSettings, device: torch.device) -> bool:
    """Whether ``settings.compile`` compiles the model on ``device``."""
    if settings.compile == "auto":
        return device.type == "cuda" and settings.quantization == "none"
    return settings.compile


def causal_lm_of(model) -> torch.nn.Module:
    """The transformers causal LM inside a peft model (the model itself when it is one)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model) -> list[torch.nn.Module]:
    """The repeated decoder blocks of a (peft-wrapped) causal LM."""
    return list(causal_lm_of(model).model.layers)


def compile_model(model, backend: str = "inductor") -> None:
    """``torch.compile`` each decoder layer in place (regional compilation), and the loss.

    The layers share one code path, so torch compiles it once and reuses it for every
    layer; state-dict keys do not change, so checkpoints and adapters save as before.
    Sequence lengths that vary from row to row make the graphs dynamic after the first.
    The loss (``rayfleet.training.loop.head_loss``: LM head, fp32 upcast, cross-entropy)
    is compiled for any number of labelled tokens and kept on the model, where the loop
    looks for it.
    """
    from rayfleet.training.loop import head_loss

    for layer in decoder_layers(model):
        layer.compile(backend=backend)
    causal_lm_of(model).compiled_head_loss = torch.compile(head_loss, backend=backend, dynamic=True)
