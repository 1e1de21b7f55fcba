"""Checkpoint folders: the adapter, optimizer and scheduler state, and where training stands.

A checkpoint folder holds::

    adapter/            the peft adapter (save_pretrained format; what the registry publishes)
    optimizer.pt        optimizer and LR-scheduler state dicts
    train_state.json    step, epoch, data position, tokens trained, resumes, loss history
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch

ADAPTER_FOLDER = "adapter"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "train_state.json"


@dataclass
class TrainState:
    """Where training stands; enough, with the model and optimizer, to resume exactly.

    The data position is ``epoch`` and ``rows_in_epoch`` (packed rows this worker has
    consumed in the current epoch); a resumed run skips those rows of that epoch.
    """

    step: int = 0
    epoch: int = 0
    rows_in_epoch: int = 0
    tokens_trained: int = 0
    data_fingerprint: str | None = None  # of the packed rows the run trains on: a resume on other data is refused
    settings: dict | None = (
        None  # model, LoRA, optimization and workers it trains with: a resume with others is refused
    )
    resumed_from_steps: list[int] = field(default_factory=list)
    train_losses: dict[str, float] = field(default_factory=dict)
    validation_losses: dict[str, float | None] = field(default_factory=dict)  # None: no validation rows


def save_checkpoint(folder: str, model, optimizer, scheduler, state: TrainState) -> None:
    """Write the adapter, optimizer/scheduler state and the train state into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(os.path.join(folder, ADAPTER_FOLDER))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               os.path.join(folder, OPTIMIZER_FILE))  # fmt: skip
    with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as handle:
        json.dump(asdict(state), handle, indent=2)


def read_train_state(folder: str) -> TrainState:
    """The train state stored in a checkpoint folder."""
    with open(os.path.join(folder, STATE_FILE), encoding="utf-8") as handle:
        return TrainState(**json.load(handle))


def load_checkpoint(folder: str, model, optimizer, scheduler) -> TrainState:
    """Restore the adapter weights, optimizer and scheduler from ``folder``; returns its train state."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    device = next(model.parameters()).device
    set_peft_model_state_dict(model, load_peft_weights(os.path.join(folder, ADAPTER_FOLDER), device=str(device)))
    saved = torch.load(os.path.join(folder, OPTIMIZER_FILE), map_location=device, weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return read_train_state(folder)
