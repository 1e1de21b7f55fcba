"""A model's tokenizer for measuring text, loaded without importing ``transformers``.

Chunking only needs token ids and character offsets, which the model's
``tokenizer.json`` gives through the ``tokenizers`` library: the same backend (and so
the same ids and offsets) as a ``transformers`` fast tokenizer. Importing
``transformers`` takes 5-20 s on the 2-core machines, once per Ray worker; this takes
well under one, which is most of a parser actor's start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


class FastTokenizer:
    """Callable like a ``transformers`` tokenizer for what :mod:`rayfleet.text.chunking` uses."""

    def __init__(self, model_folder: str | Path):
        from tokenizers import Tokenizer

        path = Path(model_folder) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: chunking needs a model folder with a fast tokenizer")
        self.backend = Tokenizer.from_file(str(path))

    def __call__(
        self,
        text: str | Sequence[str],
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        split_special_tokens: bool = True,
        verbose: bool = True,
    ) -> dict:
        """``{"input_ids": ...}`` (and ``"offset_mapping"``) for one text or a list of texts; a special token's
        spelling (``<|im_end|>``) is text unless ``split_special_tokens`` is off (a chunk is measured as the
        message text it becomes, where it stays text: rayfleet.engines.templates). ``verbose`` is taken as
        ``transformers`` takes it; this tokenizer knows no model length, so it has nothing to warn of."""
        self.backend.encode_special_tokens = split_special_tokens
        if isinstance(text, str):
            encoded = self.backend.encode(text, add_special_tokens=add_special_tokens)
            result = {"input_ids": encoded.ids}
            if return_offsets_mapping:
                result["offset_mapping"] = encoded.offsets
            return result
        batch = self.backend.encode_batch(list(text), add_special_tokens=add_special_tokens)
        result = {"input_ids": [encoded.ids for encoded in batch]}
        if return_offsets_mapping:
            result["offset_mapping"] = [encoded.offsets for encoded in batch]
        return result
