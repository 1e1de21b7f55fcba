"""LoRA adapters merged into their base model's weights, for engines that run one adapter.

A batch engine that serves a single adapter pays for LoRA on every token (vLLM's CPU
LoRA kernels most of all) although the same function is plain weights: ``W + B A``.
:func:`merged_model` writes that once per (base model, adapter) into the local cache
(``rayfleet.assets.cache_dir()/merged``) and returns the folder for the engine to load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rayfleet.assets import cache_dir, folder_fingerprint

logger = logging.getLogger(__name__)


def merge_adapter(model_path: str, adapter_folder: str, output_folder: str) -> None:
    """Save base + adapter merged into plain weights (fp32), with the tokenizer, into ``output_folder``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    PeftModel.from_pretrained(base, adapter_folder).merge_and_unload().save_pretrained(output_folder)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(output_folder)


def adapter_fingerprint(adapter_folder: str) -> str:
    """A hash of the adapter's files' contents (adapters are small)."""
    digest = hashlib.sha256()
    for path in sorted(Path(adapter_folder).iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def merged_model(model_path: str, adapter_folder: str) -> str:
    """A local folder with ``model_path`` and ``adapter_folder`` merged, made on first use and reused."""
    key = f"{folder_fingerprint(Path(model_path))}-{adapter_fingerprint(adapter_folder)}"
    target = cache_dir() / "merged" / key
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".merge-", dir=target.parent)
    try:
        merge_adapter(model_path, adapter_folder, staging)
        os.replace(staging, target)  # atomic; a concurrent merge of the same pair may have won
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("merged adapter %s into %s at %s", adapter_folder, model_path, target)
    return str(target)
