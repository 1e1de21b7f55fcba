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
from rayfleet.training.attention import example_prefixes, segment_bounds
from rayfleet.training.checkpoint import TrainState
from rayfleet.training.data import IGNORE_INDEX, example_tokens
from rayfleet.training.model import causal_lm_of


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
    gradient_accumulation_steps: int = Field(1, ge=1, description="Packed rows each worker runs per optimizer step.")
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
    tokens: int  # the examples' tokens (a row's shared prefix counts once per example, as in the data)
    label_tokens: int
    seconds: float
    tokens_per_s: float
    computed_tokens: int = 0  # tokens the model ran on (a row's shared prefix once)


def make_optimizer(model, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW over the trainable (LoRA) parameters only (fused on a GPU)."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    fused = all(parameter.is_cuda for parameter in trainable)  # one kernel for all adapters on a GPU
    return torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay, fused=fused)


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


def schedule_warning(settings: TrainSettings) -> str | None:
    """What is wrong with a warmup as long as the whole run, if it is: the rate never reaches its peak
    and never decays."""
    if settings.warmup_steps < settings.max_steps:
        return None
    peak = learning_rate_factor(settings.max_steps - 1, settings) * settings.learning_rate
    return (f"train.warmup_steps {settings.warmup_steps} is not below train.max_steps {settings.max_steps}: the "
            f"learning rate climbs to {peak:.3g} at the last step, never its peak {settings.learning_rate:g}, and "
            f"{settings.schedule} decay never starts; lower train.warmup_steps")  # fmt: skip


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


def as_tensor(values) -> torch.Tensor:
    """A row's column (a list or array of token ids or positions) as a flat CPU tensor."""
    return torch.as_tensor(values, dtype=torch.long).reshape(-1)


def loss_sum(model, row: dict, device: torch.device) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the labelled tokens of one packed row, and how many there are.

    The decoder runs on the whole row (``position_ids`` restart per example, or continue
    after the prefix the row holds once, and attention stays within each example and that
    prefix: ``rayfleet.training.attention``); the LM head only on positions whose next token
    is labelled. Which positions those are, and the examples' boundaries, are worked out
    on the CPU from the row, so nothing here waits on the GPU.
    """
    causal_lm = causal_lm_of(model)
    input_ids, position_ids = as_tensor(row["input_ids"]), as_tensor(row["position_ids"])
    next_tokens = as_tensor(row["labels"])[1:]
    labelled = (next_tokens != IGNORE_INDEX).nonzero().flatten()
    bounds = segment_bounds(position_ids)
    prefixes = example_prefixes(position_ids, bounds)
    # Copied without waiting: a blocking copy would stall until the GPU had run all queued work.
    input_ids, position_ids, targets, labelled_on_device = (
        tensor.to(device, non_blocking=True) for tensor in (input_ids, position_ids, next_tokens[labelled], labelled)
    )
    with autocast(device):
        # use_cache=False: with a KV cache transformers skips the packed (block-diagonal) mask;
        # segment_bounds, segment_prefixes: the examples' boundaries and shared prefixes for segment_sdpa.
        hidden = causal_lm.model(input_ids=input_ids.reshape(1, -1), position_ids=position_ids.reshape(1, -1),
                                 use_cache=False, segment_bounds=bounds,
                                 segment_prefixes=prefixes).last_hidden_state  # fmt: skip
        loss = getattr(causal_lm, "compiled_head_loss", head_loss)  # see rayfleet.training.model.compile_model
        total = loss(causal_lm.lm_head, hidden[0, :-1].index_select(0, labelled_on_device), targets)
    return total, len(labelled)


def head_loss(lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the LM head's logits at ``hidden`` (one row per labelled token), in fp32."""
    return F.cross_entropy(lm_head(hidden).float(), targets, reduction="sum")


@torch.no_grad()
def validation_loss(model, rows: Sequence[dict], device: torch.device) -> float | None:
    """Token-mean loss over ``rows`` (this worker's share), combined over all workers; None without validation data."""
    was_training = model.training
    model.eval()
    loss, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for row in rows:
        row_loss, row_count = loss_sum(model, row, device)
        loss, count = loss + row_loss.double(), count + row_count
    model.train(was_training)
    total, count = sum_across_workers(with_counts(loss, count)).tolist()
    return total / count if count else None


def with_counts(loss: torch.Tensor, *counts: int) -> torch.Tensor:
    """[loss, *counts] as one float64 tensor on the loss's device (one all-reduce, one read at the end)."""
    on_host = torch.tensor(counts, dtype=torch.float64)
    return torch.cat([loss.detach().double().reshape(1), on_host.to(loss.device, non_blocking=True)])


def average_gradients(parameters: list[torch.Tensor], label_tokens: torch.Tensor) -> None:
    """Sum gradients over workers in one flat all-reduce, then divide by the global label-token count.

    ``label_tokens`` stays a tensor on the gradients' device, so nothing here waits for
    the GPU; each parameter's gradient becomes a view of the one flat buffer.
    """
    grads = [parameter.grad if parameter.grad is not None else torch.zeros_like(parameter) for parameter in parameters]
    flat = sum_across_workers(torch.cat([grad.reshape(-1) for grad in grads]))
    flat /= label_tokens.clamp(min=1.0).to(flat.dtype)
    offset = 0
    for parameter, grad in zip(parameters, grads):
        parameter.grad = flat[offset : offset + grad.numel()].view_as(grad)
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
        loss, label_tokens, tokens, computed = torch.zeros((), dtype=torch.float64, device=device), 0, 0, 0
        for _ in range(settings.gradient_accumulation_steps):
            row = next(rows)
            row_loss, row_label_tokens = loss_sum(model, row, device)
            row_loss.backward()
            loss = loss + row_loss.detach().double()
            label_tokens += row_label_tokens
            tokens += example_tokens(row)
            computed += len(row["input_ids"])
        totals = sum_across_workers(with_counts(loss, label_tokens, tokens, computed))  # over workers, on the device
        average_gradients(parameters, totals[1])
        torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        summed_loss, label_tokens, tokens, computed = totals.tolist()  # the step's one wait for the GPU
        state.step += 1
        state.tokens_trained += int(tokens)
        state.train_losses[str(state.step)] = summed_loss / max(label_tokens, 1.0)
        seconds = time.perf_counter() - started
        if state.step % settings.eval_every == 0 or state.step == settings.max_steps:
            state.validation_losses[str(state.step)] = validation_loss(model, validation_rows, device)
        on_step(StepReport(state.step, state.train_losses[str(state.step)], learning_rate, int(tokens),
                           int(label_tokens), seconds, tokens / seconds, int(computed)), state)  # fmt: skip
    return state
