"""The training loop: packed rows -> loss on assistant tokens -> accumulated, averaged LoRA updates.

Plain PyTorch, device-agnostic (CUDA with bf16 autocast when there is a GPU, fp32 on
CPU) and distributed-aware without Ray: when ``torch.distributed`` is initialized (Ray
Train's ``TorchTrainer`` does that), gradients of the trainable (LoRA) parameters are
summed across workers in one all-reduce per optimizer step and divided by the global
number of label tokens, so every step is the exact token mean over all workers and
accumulated micro-batches, whatever the number of examples in each packed row.

Logits are computed only where there is a label (the assistant's tokens), not at every
position: the LM head over a 49k vocabulary is a fifth of SmolLM2's forward FLOPs, and
most tokens of an SFT example are prompt.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field

from rayfleet.config import BaseConfig
from rayfleet.training.checkpoint import TrainState
from rayfleet.training.data import IGNORE_INDEX


class TrainSettings(BaseConfig):
    """Optimization and the loop's rhythm (steps are optimizer steps)."""

    max_steps: int = Field(30, ge=1, description="Optimizer steps to train for in total (a resumed run counts on).")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of AdamW.")
    warmup_steps: int = Field(3, ge=0, description="Steps of linear warmup from 0 to the peak learning rate.")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate decay after warmup, down to 0 at max_steps (or none)."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the LoRA parameters.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this global L2 norm.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Packed rows each worker runs per optimizer step."
    )
    eval_every: int = Field(10, ge=1, description="Validation loss every this many steps (and at the end).")
    checkpoint_every: int = Field(10, ge=1, description="A checkpoint every this many steps (and at the end).")
    log_every: int = Field(1, ge=1, description="A progress line (step, loss, tokens/s) every this many steps.")
    seed: int = Field(0, description="Seed for LoRA initialization, dropout and the data order.")


@dataclass(frozen=True)
class StepReport:
    """Figures of one optimizer step, summed over all workers."""

    step: int
    loss: float
    learning_rate: float
    tokens: int
    label_tokens: int
    seconds: float
    tokens_per_s: float


def make_optimizer(model, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW over the trainable (LoRA) parameters only."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def learning_rate_factor(step: int, settings: TrainSettings) -> float:
    """Multiplier of the peak rate at ``step``: linear warmup, then the configured decay."""
    if step < settings.warmup_steps:
        return (step + 1) / (settings.warmup_steps + 1)
    if settings.schedule == "constant":
        return 1.0
    progress = (step - settings.warmup_steps) / max(1, settings.max_steps - settings.warmup_steps)
    if settings.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(optimizer, settings: TrainSettings) -> torch.optim.lr_scheduler.LambdaLR:
    """The warmup + decay schedule as a LambdaLR (its state goes into checkpoints)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, settings))


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sum_across_workers(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over every worker (itself when not distributed)."""
    if world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU (fp32 there)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def as_tensor(values, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long, device=device).reshape(1, -1)


def loss_sum(model, row: dict, device: torch.device) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the labelled tokens of one packed row, and how many there are.

    The decoder runs on the whole row (``position_ids`` restart per example, which makes
    the attention mask block-diagonal); the LM head only on positions whose next token
    is labelled.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    input_ids, position_ids = as_tensor(row["input_ids"], device), as_tensor(row["position_ids"], device)
    targets = as_tensor(row["labels"], device)[0, 1:]
    labelled = targets != IGNORE_INDEX
    with autocast(device):
        # use_cache=False: with a KV cache transformers skips the packed (block-diagonal) mask.
        hidden = causal_lm.model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
        logits = causal_lm.lm_head(hidden[0, :-1][labelled])
    return F.cross_entropy(logits.float(), targets[labelled], reduction="sum"), int(labelled.sum())


@torch.no_grad()
def validation_loss(model, rows: Sequence[dict], device: torch.device) -> float:
    """Token-mean loss over ``rows`` (this worker's share), combined over all workers."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for row in rows:
        total, count = loss_sum(model, row, device)
        totals += torch.tensor([total.item(), count], dtype=torch.float64, device=device)
    model.train(was_training)
    total, count = sum_across_workers(totals).tolist()
    return total / count if count else float("nan")


def average_gradients(parameters: list[torch.Tensor], label_tokens: float) -> None:
    """Sum gradients over workers in one flat all-reduce, then divide by the global label-token count."""
    grads = [parameter.grad if parameter.grad is not None else torch.zeros_like(parameter) for parameter in parameters]
    flat = sum_across_workers(torch.cat([grad.reshape(-1) for grad in grads]))
    flat /= max(label_tokens, 1.0)
    offset = 0
    for parameter, grad in zip(parameters, grads):
        parameter.grad = flat[offset : offset + grad.numel()].view_as(grad).clone()
        offset += grad.numel()


def rows_from(epochs: Callable[[int, int], Iterable[dict]], state: TrainState) -> Iterator[dict]:
    """Packed rows from the saved data position on, epoch after epoch, advancing ``state`` as they go."""
    while True:
        produced = False
        for row in epochs(state.epoch, state.rows_in_epoch):
            produced = True
            state.rows_in_epoch += 1
            yield row
        if not produced and state.rows_in_epoch == 0:
            raise ValueError(f"epoch {state.epoch} of the training data holds no rows")
        state.epoch, state.rows_in_epoch = state.epoch + 1, 0


def train(
    model,
    optimizer: torch.optim.Optimizer,
    scheduler,
    epochs: Callable[[int, int], Iterable[dict]],
    validation_rows: Sequence[dict],
    settings: TrainSettings,
    state: TrainState,
    on_step: Callable[[StepReport, TrainState], None] = lambda report, state: None,
) -> TrainState:
    """Train from ``state`` to ``settings.max_steps``; returns the final state.

    Args:
        epochs: ``epochs(epoch, skip)`` yields this worker's packed rows of ``epoch``
            after its first ``skip`` (the data position of a resumed run).
        validation_rows: this worker's share of the validation rows.
        on_step: called after every optimizer step (and after validation, when due),
            on every worker: progress lines, checkpoints and fault injection hang here.
            The state's ``validation_losses`` holds the new figure on validation steps.
    """
    device = next(model.parameters()).device
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if state.step == 0 and "0" not in state.validation_losses:
        state.validation_losses["0"] = validation_loss(model, validation_rows, device)
    model.train()
    rows = rows_from(epochs, state)
    while state.step < settings.max_steps:
        started = time.perf_counter()
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, label tokens, tokens
        for _ in range(settings.gradient_accumulation_steps):
            row = next(rows)
            total, count = loss_sum(model, row, device)
            total.backward()
            totals += torch.tensor([total.item(), count, len(row["input_ids"])], dtype=torch.float64, device=device)
        summed_loss, label_tokens, tokens = sum_across_workers(totals).tolist()
        average_gradients(parameters, label_tokens)
        torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens_trained += int(tokens)
        state.train_losses[str(state.step)] = summed_loss / max(label_tokens, 1.0)
        seconds = time.perf_counter() - started
        if state.step % settings.eval_every == 0 or state.step == settings.max_steps:
            state.validation_losses[str(state.step)] = validation_loss(model, validation_rows, device)
        on_step(StepReport(state.step, state.train_losses[str(state.step)], learning_rate, int(tokens),
                           int(label_tokens), seconds, tokens / seconds), state)  # fmt: skip
    return state
