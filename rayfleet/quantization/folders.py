"""Where a quantized checkpoint may be written, and which sources may be quantized at all.

A checkpoint is written into a staging folder beside ``output`` and moved into place once
complete, so a failed run leaves no half-written checkpoint and the published folder holds
only what this run wrote (never an older run's shards, index or adapter files, which vLLM
would read beside the new weights):

    check_output_folder(source, output, overwrite=False)   # refuses the source, overlaps, non-empty
    with staged_folder(output) as staging:
        ...write the checkpoint into staging...            # moved to ``output`` on success

:func:`require_unquantized_source` refuses a source that is already a quantized checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rayfleet.config import InputError


class OutputFolderError(InputError):
    """An output folder the checkpoint must not be written to; the message says why and what to do."""


class AlreadyQuantizedError(InputError):
    """A source model that is already a quantized checkpoint."""


def checkpoint_quantization(model_folder: Path) -> dict | None:
    """The ``quantization_config`` of a model folder's ``config.json`` (None for a full-precision model)."""
    return json.loads((model_folder / "config.json").read_text()).get("quantization_config")


def require_unquantized_source(source: Path) -> None:
    """Refuse a source that is already quantized (its int8/int4 weights would be quantized again).

    Raises:
        AlreadyQuantizedError: naming the checkpoint's format and what to quantize instead.
    """
    quantization = checkpoint_quantization(source)
    if quantization is not None:
        scheme = quantization.get("format") or quantization.get("quant_method") or "unknown format"
        raise AlreadyQuantizedError(
            f"{source} is already a quantized checkpoint ({scheme}): quantize the full-precision model it was "
            "made from instead (its rayfleet-quantization.json names that model's fingerprint)"
        )


def check_output_folder(source: Path, output: Path, overwrite: bool) -> None:
    """Refuse an output folder that is the source, inside it, holds it, or already has files.

    Args:
        source: the model folder being quantized.
        output: where the checkpoint goes.
        overwrite: replace a non-empty ``output`` (never one that is or holds the source).

    Raises:
        OutputFolderError: with the reason and what to choose instead.
    """
    source, output = source.expanduser().resolve(), output.expanduser().resolve()
    if output == source:
        raise OutputFolderError(
            f"output {output} is the source model's folder: the checkpoint would overwrite the source; "
            "choose a new folder"
        )
    if output.is_relative_to(source):
        raise OutputFolderError(f"output {output} is inside the source model's folder {source}: choose one outside it")
    if source.is_relative_to(output):
        raise OutputFolderError(
            f"output {output} holds the source model {source}: the checkpoint would replace it; choose a new folder"
        )
    if output.exists() and not output.is_dir():
        raise OutputFolderError(f"output {output} is a file, not a folder")
    leftovers = sorted(path.name for path in output.iterdir()) if output.is_dir() else []
    if leftovers and not overwrite:
        raise OutputFolderError(
            f"output {output} is not empty ({len(leftovers)} entries, e.g. {leftovers[:5]}): files of an earlier "
            "checkpoint would be read and published with the new one; choose a new or empty folder, or set "
            "overwrite=true to replace everything in it"
        )


@contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """A fresh folder beside ``output``; on success it replaces ``output`` (whatever was there), else it is removed."""
    output = output.expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would keep the published checkpoint from other users
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.is_dir():
        shutil.rmtree(output)
    staging.replace(output)
