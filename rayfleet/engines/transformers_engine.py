"""Generation with plain ``transformers`` ``generate``: the fallback engine and the honest baseline.

Prompts are grouped by length and run in left-padded batches of
``EngineConfig.transformers_batch_size``; results come back in input order. Stop strings
and OpenAI's presence and frequency penalties mean what they mean in vLLM: the reply is cut
before the first stop string, and the penalties count generated tokens only.
"""

from __future__ import annotations

import logging
import reprlib
from typing import Sequence

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
)

from rayfleet.engines.base import Conversation, EngineConfig, Generation, SamplingConfig, claim_cpu_threads
from rayfleet.engines.templates import count_tokens, render_prompt_ids

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersEngine:
    """A :class:`~rayfleet.engines.base.GenerationEngine` over ``AutoModelForCausalLM.generate``."""

    name = "transformers"

    def __init__(self, model_path: str, config: EngineConfig, model_name: str | None = None):
        self.config = config
        self.model_name = model_name or config.model
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            claim_cpu_threads()
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=DTYPES[config.dtype])
        if config.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, config.adapter)
        self.model = model.to(self.device).eval()

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    def prompt_token_ids(self, conversation: Conversation) -> list[int]:
        return render_prompt_ids(self.tokenizer, conversation)

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        if (constraint := sampling.output_constraint()) is not None:
            name, value = constraint
            raise ValueError(
                f"sampling.{name} ({reprlib.repr(value)}) needs the vLLM engine: the transformers engine cannot "
                f"constrain its output; use engine kind vllm or leave sampling.{name} unset"
            )
        prompts = [self.prompt_token_ids(conversation) for conversation in conversations]
        order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
        results: dict[int, Generation] = {}
        batch_size = self.config.transformers_batch_size
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            for index, generation in zip(indices, self._generate_batch([prompts[i] for i in indices], sampling)):
                results[index] = generation
        return [results[index] for index in range(len(prompts))]

    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[Generation]:
        width = max(len(prompt) for prompt in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        greedy = sampling.temperature == 0.0
        if not greedy and sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=sampling.max_tokens,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None,
                repetition_penalty=sampling.repetition_penalty,
                logits_processor=LogitsProcessorList(penalties(width, sampling)),
                stop_strings=sampling.stop or None,
                tokenizer=self.tokenizer,
                pad_token_id=pad,
                eos_token_id=self._stop_token_ids(),
            )
        return [self._decode(prompt, row[width:].tolist(), sampling.stop) for prompt, row in zip(prompts, output)]

    def _stop_token_ids(self) -> list[int]:
        stop_ids = {self.tokenizer.eos_token_id}
        generation_config = getattr(self.model, "generation_config", None)
        configured = getattr(generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            stop_ids.add(configured)
        elif configured:
            stop_ids.update(configured)
        return sorted(token for token in stop_ids if token is not None)

    def _decode(self, prompt: list[int], new_tokens: list[int], stop: Sequence[str] = ()) -> Generation:
        stop_ids = set(self._stop_token_ids())
        kept: list[int] = []
        finish_reason = "length"
        for token in new_tokens:
            kept.append(token)
            if token in stop_ids:
                finish_reason = "stop"
                break
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        stop_at = min((text.find(string) for string in stop if string in text), default=-1)
        if stop_at >= 0:
            text, finish_reason = text[:stop_at], "stop"
        return Generation(text.strip(), len(prompt), len(kept), finish_reason, kept)

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class OpenAIPenalties(LogitsProcessor):
    """Presence and frequency penalties over the tokens generated after ``prompt_width``
    (vLLM's and OpenAI's meaning)."""

    def __init__(self, prompt_width: int, presence: float, frequency: float):
        self.prompt_width, self.presence, self.frequency = prompt_width, presence, frequency

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_width :]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


def penalties(prompt_width: int, sampling: SamplingConfig) -> list[LogitsProcessor]:
    if sampling.presence_penalty == 0 and sampling.frequency_penalty == 0:
        return []
    return [OpenAIPenalties(prompt_width, sampling.presence_penalty, sampling.frequency_penalty)]
