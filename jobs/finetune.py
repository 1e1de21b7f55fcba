"""Distributed LoRA fine-tuning on Ray Train, checkpoints in storage, the adapter published to the registry.

Run it anywhere the same way::

    python -m jobs.finetune                                    # the demo set, 2 CPU workers, local folders
    python -m jobs.finetune data.train=s3://bucket/qa/sft/train.parquet \\
        data.validation=s3://bucket/qa/sft/validation.parquet \\
        storage_path=s3://bucket/finetune registry=s3://bucket/registry train.max_steps=200
    ray job submit --working-dir . -- python -m jobs.finetune config=jobs/configs/finetune/smollm2_lora_cpu.yaml ...

The driver reads the chat-format SFT Parquet (``schemas.SFT_SCHEMA``, e.g. ``sft/`` of
``jobs.make_qa``), tokenizes it with the model's chat template (loss on assistant tokens
only), drops or rejects bad rows as ``data.on_bad_example`` says, packs the examples
into rows without padding and hands them to the workers as Ray Data shards. Each
worker runs the plain loop of ``rayfleet.training.loop``; gradients are averaged over
workers. Without ``data.train`` the job builds a real demo set first: three
questions per ACL paper of ``aclsum`` answered by the paper's human-written summaries
(challenge, approach, outcome), and for ``data.demo_grounded_papers`` of the papers the
same questions again in the RAG path's prompt over retrieved passages.

Checkpoints (adapter, optimizer, scheduler, step, data position) go to
``storage_path/run_name`` through ``RunConfig``; ``FailureConfig`` restarts dead workers
from the last one, and resubmitting the same ``run_name`` resumes it (a finished run
trains no further, unless ``train.max_steps`` grew, and publishes nothing new); a resubmission
whose packed rows or training settings differ from the checkpoints' is refused before it starts. Workers log
``step N/M loss L lr R tokens/s T`` as they go. At the end the adapter of the last checkpoint (or with
``publish_checkpoint`` best_validation, of the one of lowest validation loss) is published as
the next version of ``adapter_name`` in the registry (``adapters/<name>/<version>/``)
with its provenance, and optionally a merged full model under ``models/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import tempfile
import time
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from rayfleet import storage
from rayfleet.assets import check_model, folder_fingerprint, resolve_model
from rayfleet.config import BaseConfig, InputError, describe, run_job
from rayfleet.engines.merged import merge_adapter
from rayfleet.ray_setup import init_ray, wait_for_resources
from jobs.demo_documents import DEMO_QUESTIONS
from rayfleet.registry import ArtifactVersion, Registry, RegistryError, check_name
from rayfleet.retrieval.rag import prompt_layout_id
from rayfleet.tables import write_table
from rayfleet.training.checkpoint import (
    ADAPTER_FOLDER,
    STATE_FILE,
    TrainState,
    load_checkpoint,
    read_train_state,
    save_checkpoint,
)
from rayfleet.training.data import (
    BadExamplePolicy,
    DataReport,
    dataset_fingerprint,
    pack_examples,
    prepare_examples,
    read_sft_rows,
    rows_fingerprint,
    sft_files,
    shared_token_share,
    trained_documents,
)
from rayfleet.training.loop import (
    StepReport,
    TrainSettings,
    make_optimizer,
    make_scheduler,
    schedule_warning,
    train,
)
from rayfleet.training.model import (
    LoraSettings,
    build_lora_model,
    check_quantization,
    check_target_modules,
    training_device,
)
from schemas import SFT_SCHEMA

logger = logging.getLogger("jobs.finetune")
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")  # sentence ends and line breaks (headings)
PublishedCheckpoint = Literal["last", "best_validation"]  # which checkpoint's adapter a run publishes
GroundedAnswer = Literal["summary", "best_sentence"]  # what a grounded demo question is answered with
ACLSUM_VAL_PAPERS = 50  # papers in aclsum 0.1.2's val split
GROUNDED_TOP_K = 4  # passages retrieved per grounded demo question, as jobs.evaluate's default top_k


class FinetuneDataConfig(BaseConfig):
    """The SFT data and how it becomes training rows."""

    train: str | None = Field(
        None,
        description="SFT Parquet file or folder (schemas.SFT_SCHEMA) to train on; unset: build the aclsum demo set.",
    )
    validation: str | None = Field(
        None,
        description="SFT Parquet of held-out pairs for the validation loss; unset with train unset: the demo set's.",
    )
    demo_train_papers: int = Field(100, ge=1, le=100, description="Demo set: aclsum train-split papers (3 pairs each).")
    demo_validation_papers: int = Field(20, ge=1, le=50, description="Demo set: aclsum val-split papers held out.")
    demo_extra_train_papers: int = Field(
        0,
        ge=0,
        le=49,
        description="Demo set: val-split papers after the held-out ones, trained on as well (3 pairs "
        "each; the split has 50). The test split, which make quality evaluates on, is never trained on.",
    )
    demo_grounded_papers: int = Field(
        0,
        ge=0,
        le=100,
        description="Demo set: for this many papers of each split, the three questions again in the RAG path's "
        "prompt (rayfleet.retrieval.rag) over passages BM25 retrieves from the split's chunks, so the adapter also "
        "learns to answer from retrieved context (smollm2_lora_cpu.yaml: 50). 0: closed-book pairs only, which "
        "scored best closed-book (README, Evaluation).",
    )
    demo_grounded_answer: GroundedAnswer = Field(
        "summary",
        description="Demo set: what a grounded example answers. summary: the human summary; best_sentence: the "
        "retrieved passages' sentence with the highest token F1 against it, cited like [2] (an extractive answer, "
        "faithful to the passages by construction).",
    )
    demo_context_tokens: int = Field(
        768,
        ge=64,
        description="Demo set: most prompt tokens of retrieved text per grounded example (as the RAG path's).",
    )
    max_seq_len: int = Field(
        1024, ge=16, description="Longest example in tokens; longer ones are bad rows (grounded demo rows reach ~950)."
    )
    pack_length: int = Field(
        1024,
        ge=16,
        description="Tokens per packed row (one micro-batch), at least max_seq_len. Attention runs example "
        "by example (segment_sdpa; flash kernels on a GPU), so long rows cost only memory.",
    )
    share_prefix: Literal["auto"] | bool = Field(
        "auto",
        description="Hold the tokens every example of a packed row begins with (chat template, system prompt) once "
        "per row: the model runs on fewer tokens for the same loss (rayfleet.training.data). auto: on CPUs; off on "
        "GPUs, where such rows take a masked attention kernel instead of flash (not measured there yet).",
    )
    on_bad_example: BadExamplePolicy = Field(
        "drop",
        description="drop: skip and count bad rows (no messages, empty answer, too long); fail: stop at the first.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "FinetuneDataConfig":
        if self.validation is not None and self.train is None:
            raise ValueError("data.validation is set without data.train: it would be ignored and the demo set trained "
                             "on; set data.train too")  # fmt: skip
        if self.demo_validation_papers + self.demo_extra_train_papers > ACLSUM_VAL_PAPERS:
            raise ValueError(f"data.demo_validation_papers {self.demo_validation_papers} + "
                             f"data.demo_extra_train_papers "
                             f"{self.demo_extra_train_papers} is more than the {ACLSUM_VAL_PAPERS} papers "
                             f"of aclsum's val split")  # fmt: skip
        if self.max_seq_len > self.pack_length:
            raise ValueError(f"data.max_seq_len {self.max_seq_len} is above data.pack_length {self.pack_length}: an "
                             f"example must fit a packed row")  # fmt: skip
        return self


class ScalingSettings(BaseConfig):
    """Ray Train's ScalingConfig."""

    num_workers: int = Field(2, ge=1, description="Training workers (data-parallel ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker (CUDA, bf16); false trains on CPUs.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each worker claims; its torch threads follow it.")
    resources_timeout_s: float = Field(
        600.0,
        ge=0,
        description="How long to wait for a cluster at ray_address to have the workers' CPUs and GPUs (an "
        "autoscaler adding nodes) before failing and naming what is missing; a local Ray fails at once.",
    )

    def resources(self) -> dict[str, float]:
        """What the workers claim from the cluster in all."""
        needed = {"CPU": self.num_workers * self.cpus_per_worker}
        return needed | ({"GPU": float(self.num_workers)} if self.use_gpu else {})


class FaultInjectionConfig(BaseConfig):
    """Tests only: kill a worker process for real, once, to exercise restarts."""

    kill_worker_at_step: int | None = Field(
        None,
        ge=1,
        description="SIGKILL the worker of kill_worker_rank after this step, in a run not resumed from a checkpoint.",
    )
    kill_worker_rank: int = Field(1, ge=0, description="Rank of the worker to kill.")


class FinetuneConfig(BaseConfig):
    """Configuration of the LoRA fine-tuning job."""

    model: str = Field("smollm2-135m-instruct", description="Base model: provisioned name or local HF folder.")
    data: FinetuneDataConfig = Field(default_factory=FinetuneDataConfig, description="SFT data and packing.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapter settings.")
    train: TrainSettings = Field(
        default_factory=lambda: TrainSettings(max_steps=50, learning_rate=5e-4, eval_every=10),
        description="Optimization and loop rhythm (50 steps of 2 workers: about three passes over the demo set).",
    )
    scaling: ScalingSettings = Field(default_factory=ScalingSettings, description="Workers and their resources.")
    max_failures: int = Field(
        3, ge=-1, description="Worker failures a run recovers from (from its last checkpoint); -1: no limit."
    )
    keep_checkpoints: int | None = Field(
        3,
        ge=1,
        description="Checkpoints kept in storage (the newest; with publish_checkpoint best_validation, those of "
        "lowest validation loss, and the newest too); unset keeps all.",
    )
    publish_checkpoint: PublishedCheckpoint = Field(
        "last",
        description="The checkpoint whose adapter is published: the last step's, or best_validation, the one of lowest "
        "validation loss (a run trained past its best is not published overfitted); each checkpoint step must then "
        "be a validation step (train.checkpoint_every a multiple of train.eval_every).",
    )
    storage_path: str = Field(
        ".data/finetune", description="Run storage (checkpoints, demo data): local folder or s3://."
    )
    run_name: str = Field("smollm2-acl-qa", description="Ray Train run name; resubmitting the same name resumes it.")
    registry: str = Field(
        ".data/registry", description="Registry root (local folder or s3://) the adapter is published to."
    )
    adapter_name: str = Field("smollm2-acl-qa", description="Registry name of the adapter (each run adds a version).")
    export_merged: bool = Field(
        False, description="Also publish base + adapter merged as a full model (registry kind models)."
    )
    ray_address: str | None = Field(None, description="Ray cluster address; default $RAY_ADDRESS or a local Ray.")
    fault_injection: FaultInjectionConfig = Field(
        default_factory=FaultInjectionConfig, description="Tests only: deliberate worker kills."
    )

    @model_validator(mode="after")
    def _checkpoints_validated(self) -> "FinetuneConfig":
        if self.publish_checkpoint == "best_validation" and self.train.checkpoint_every % self.train.eval_every:
            raise ValueError(f"publish_checkpoint best_validation compares the checkpoints' validation losses, but "
                             f"train.checkpoint_every {self.train.checkpoint_every} is not a multiple of "
                             f"train.eval_every {self.train.eval_every}: some checkpoints would have none")  # fmt: skip
        return self

    @field_validator("adapter_name", "run_name")
    @classmethod
    def _registry_name(cls, name: str) -> str:
        """The adapter's registry name, and the run's: a folder under ``storage_path`` (``../x`` would leave
        it, an empty one would read every run's checkpoints, and Ray Train takes ASCII names only)."""
        try:
            return check_name(name)
        except RegistryError as error:
            raise ValueError(str(error)) from error


# -- data (driver) -------------------------------------------------------------------------


def demo_rows(split: Literal["train", "val"], papers: int, skip: int = 0) -> list[dict]:
    """SFT rows from aclsum: for each of ``papers`` papers after the split's first ``skip``, three questions
    answered by its human-written summaries."""
    from aclsum import ACLSum

    rows = []
    for paper in ACLSum(split).documents[skip : skip + papers]:
        for aspect, question in DEMO_QUESTIONS.items():
            messages = [{"role": "user", "content": question.format(title=paper.title)},
                        {"role": "assistant", "content": paper.summaries[aspect]}]  # fmt: skip
            rows.append({"messages": messages, "chunk_id": None, "doc_id": f"acl-{paper.id}", "origin": "user"})
    return rows


def grounded_demo_rows(
    split: Literal["train", "val"], papers: int, context_tokens: int, tokenizer, answer: GroundedAnswer = "summary"
) -> list[dict]:
    """The demo questions of ``papers`` papers in the RAG path's prompt, answered from the passages.

    The passages are the top chunks BM25 finds for the question among all the chunks of
    those papers (the right paper's, mostly, as at serving time), fitted to
    ``context_tokens`` by the same code as the RAG path and the evaluation. The answer is
    the human summary, or (``best_sentence``) the passages' sentence closest to it.
    """
    import numpy as np

    from jobs.demo_documents import DemoDocumentsConfig, build_documents, chunk_rows, qa_pairs
    from rayfleet.retrieval.lexical import BM25
    from rayfleet.retrieval.rag import fit_to_budget, grounded_conversation
    from rayfleet.retrieval.retriever import Hit

    settings = DemoDocumentsConfig(output="unused", count=papers, split=split, content="sections")
    documents = build_documents(settings)
    chunks = chunk_rows(documents, settings.chunk_tokens)
    lexical = BM25([chunk["text"] for chunk in chunks])
    rows = []
    for pair in qa_pairs(documents, split):
        scores = lexical.scores([pair["question"]])[0]
        best = np.argsort(-scores, kind="stable")[:GROUNDED_TOP_K]
        hits = [Hit(chunk_id=chunks[i]["chunk_id"], doc_id=chunks[i]["doc_id"], text=chunks[i]["text"],
                    score=float(scores[i]), page_start=None, page_end=None, heading=chunks[i]["heading"],
                    source=chunks[i]["source"], title=chunks[i]["title"]) for i in best]  # fmt: skip
        passages = fit_to_budget(hits, tokenizer, context_tokens)
        reply = pair["answer"] if answer == "summary" else best_passage_sentence(passages, pair["answer"])
        messages = grounded_conversation(pair["question"], passages, tokenizer, context_tokens) + [
            {"role": "assistant", "content": reply}
        ]
        rows.append({"messages": messages, "chunk_id": None, "doc_id": pair["doc_id"], "origin": "user"})
    return rows


def best_passage_sentence(passages: list, reference: str) -> str:
    """The sentence of the passages with the highest token F1 against ``reference``, cited by passage number."""
    from rayfleet.evaluation.metrics import token_f1

    candidates = [
        (token_f1(sentence, reference), -number, sentence)
        for number, passage in enumerate(passages, start=1)
        for sentence in SENTENCE_BREAK.split(passage.text)
        if sentence.strip()
    ]
    _, negative_number, sentence = max(candidates)
    return f"{sentence.strip()} [{-negative_number}]"


def data_uris(config: FinetuneConfig, tokenizer) -> tuple[str, str | None]:
    """The train and validation SFT URIs, building the demo set under ``storage_path`` when none is given.

    The demo set's folder is named by its settings (and the RAG prompt's layout), so changing them
    builds a new set.
    """
    if config.data.train is not None:
        refuse_held_out_splits(config.data.train)
        refuse_training_files_in_validation(config.data.train, config.data.validation)
        return config.data.train, config.data.validation
    data = config.data
    name = (f"demo-sft-{data.demo_train_papers}-{data.demo_validation_papers}-{data.demo_grounded_papers}"
            f"-{data.demo_grounded_answer}-{data.demo_context_tokens}")  # fmt: skip
    if data.demo_extra_train_papers:
        name += f"-extra{data.demo_extra_train_papers}"
    if data.demo_grounded_papers:
        name += f"-{prompt_layout_id(tokenizer)}"  # a new RAG prompt layout builds a new set
    folder = storage.join(config.storage_path, name)
    train_uri, validation_uri = storage.join(folder, "train.parquet"), storage.join(folder, "validation.parquet")
    if not (storage.exists(train_uri) and storage.exists(validation_uri)):
        storage.ensure_bucket(folder)
        for uri, split, papers in (
            (train_uri, "train", data.demo_train_papers),
            (validation_uri, "val", data.demo_validation_papers),
        ):
            grounded = min(papers, data.demo_grounded_papers)
            rows = demo_rows(split, papers)
            if grounded:
                rows += grounded_demo_rows(
                    split, grounded, data.demo_context_tokens, tokenizer, data.demo_grounded_answer
                )
            if split == "train" and data.demo_extra_train_papers:
                rows += demo_rows("val", data.demo_extra_train_papers, skip=data.demo_validation_papers)
            write_table(uri, pa.Table.from_pylist(rows, SFT_SCHEMA))
        logger.info("built the aclsum demo SFT set in %s", folder)
    return train_uri, validation_uri


HELD_OUT_FILES = ("validation.parquet", "test.parquet")  # jobs.make_qa's held-out splits beside train.parquet


def refuse_held_out_splits(train_uri: str) -> None:
    """Refuse a training folder that holds jobs.make_qa's held-out split files: training on every file in
    it would train on the questions the evaluation holds out."""
    files = sft_files(train_uri)
    held_out = sorted({uri.rsplit("/", 1)[-1] for uri in files} & set(HELD_OUT_FILES))
    if held_out and len(files) > 1:
        raise InputError(f"data.train={train_uri} holds the held-out splits {held_out} of a jobs.make_qa set: training "
                         f"on the whole folder would train on them. "
                         f"Set data.train={storage.join(train_uri, 'train.parquet')} "
                         f"and data.validation={storage.join(train_uri, 'validation.parquet')}")  # fmt: skip


def refuse_training_files_in_validation(train_uri: str, validation_uri: str | None) -> None:
    """Refuse a validation folder that holds the training set's files (a jobs.make_qa ``sft/`` folder given
    whole): its loss would measure rows trained on, and ``best_validation`` pick a checkpoint by them. The
    very same URI for both is allowed, with a warning (:func:`main`)."""
    if validation_uri is None or same_uri(validation_uri, train_uri):
        return
    shared = sorted(set(sft_files(train_uri)) & set(sft_files(validation_uri)))
    if shared:
        raise InputError(f"data.validation={validation_uri} holds data.train's file(s) "
                         f"{[uri.rsplit('/', 1)[-1] for uri in shared]}: the validation loss would measure rows "
                         f"trained on. Name the validation file itself, e.g. "
                         f"data.validation={storage.join(validation_uri, 'validation.parquet')}")  # fmt: skip


def check_example_length(model_path: str, max_seq_len: int) -> None:
    """Refuse examples longer than the model has positions for (packed rows may be longer: each example's
    positions start at 0).

    Raises:
        InputError: naming both lengths.
    """
    from transformers import AutoConfig

    positions = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    if positions and max_seq_len > positions:
        raise InputError(f"data.max_seq_len {max_seq_len} is above the {positions} positions of {model_path} "
                         "(max_position_embeddings): set data.max_seq_len to at most that")  # fmt: skip


def same_uri(first: str, second: str) -> bool:
    """Whether two URIs name the same file or folder as written (a trailing ``/`` aside)."""
    return storage.resolve(first).uri.rstrip("/") == storage.resolve(second).uri.rstrip("/")


def packed_rows(uri: str, tokenizer, config: FinetuneConfig) -> tuple[list[dict], DataReport]:
    """Read, tokenize, filter and pack one SFT set."""
    examples, report = prepare_examples(
        read_sft_rows(uri), tokenizer, config.data.max_seq_len, config.data.on_bad_example
    )
    if report.dropped:
        logger.warning(
            "%s: dropped %d of %d rows: %s", uri, sum(report.dropped.values()), report.rows, dict(report.dropped)
        )
    if report.duplicate_conversations:
        logger.warning("%s: %d of the %d rows kept repeat an earlier row's conversation word for word: each counts "
                       "as often as it appears (remove the copies unless that is meant)", uri,
                       report.duplicate_conversations, report.kept)  # fmt: skip
    return pack_examples(examples, config.data.pack_length, config.train.seed, shares_prefix(config)), report


def shares_prefix(config: FinetuneConfig) -> bool:
    """Whether packed rows hold their examples' shared prefix once (``data.share_prefix``; auto: on CPUs)."""
    if config.data.share_prefix == "auto":
        return not config.scaling.use_gpu
    return config.data.share_prefix


# -- training (each Ray Train worker) -------------------------------------------------------


def train_worker(payload: dict) -> None:
    """Ray Train's per-worker function: build the model, resume if there is a checkpoint, train, report."""
    import ray.train
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = FinetuneConfig.model_validate(payload["config"])
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.scaling.cpus_per_worker)))
    torch.manual_seed(config.train.seed)
    device = training_device() if config.scaling.use_gpu else torch.device("cpu")
    if device.type == "cuda":
        device = torch.device("cuda", context.get_local_rank())
        torch.cuda.set_device(device)
    model = build_lora_model(payload["model_path"], config.lora, device)
    optimizer = make_optimizer(model, config.train)
    scheduler = make_scheduler(optimizer, config.train)
    state, checkpoint = TrainState(), ray.train.get_checkpoint()
    if checkpoint is not None:
        # A copy of its own per worker: with the node-shared folder of as_directory(), one rank's
        # download or clean-up could rewrite the adapter file another rank had memory-mapped
        # (seen once: SIGBUS in load_peft_weights while resuming after a killed worker).
        with tempfile.TemporaryDirectory(prefix=f"resume-rank{rank}-") as folder:
            state = load_checkpoint(checkpoint.to_directory(folder), model, optimizer, scheduler)
        state.resumed_from_steps.append(state.step)
        logger.info(
            "rank %d resumes from step %d (epoch %d, row %d)", rank, state.step, state.epoch, state.rows_in_epoch
        )
    state.data_fingerprint = payload["data_fingerprint"]
    state.settings = payload["settings"]
    shard = ray.train.get_dataset_shard("train")
    validation = [
        row
        for index, row in enumerate(ray.train.get_dataset_shard("validation").iter_rows())
        if index % workers == rank
    ]

    def epochs(epoch: int, skip: int):
        """Each pass over the shard is the next epoch (preserve_order keeps it the same rows, in order)."""
        for index, row in enumerate(shard.iter_rows()):
            if index >= skip:
                yield row

    step_tokens, step_seconds = 0, 0.0  # training steps only: validation and checkpoints are not in tokens/s

    def on_step(report: StepReport, state: TrainState) -> None:
        nonlocal step_tokens, step_seconds
        step_tokens, step_seconds = step_tokens + report.tokens, step_seconds + report.seconds
        tokens_per_s = step_tokens / step_seconds
        if rank == 0 and (report.step % config.train.log_every == 0 or report.step == config.train.max_steps):
            logger.info("step %d/%d loss %.4f lr %.2e tokens/s %.0f (this step %.0f)%s",
                        report.step, config.train.max_steps,
                        report.loss, report.learning_rate, tokens_per_s, report.tokens_per_s,
                        f" validation loss {state.validation_losses[str(report.step)]:.4f}"
                        if state.validation_losses.get(str(report.step)) is not None else "")  # fmt: skip
        if config.fault_injection.kill_worker_at_step == report.step and checkpoint is None:
            kill_worker_for_fault_injection(config.fault_injection, rank, report.step)
        if report.step % config.train.checkpoint_every == 0 or report.step == config.train.max_steps:
            report_checkpoint(model, optimizer, scheduler, state, report, tokens_per_s, rank)

    train(model, optimizer, scheduler, epochs, validation, config.train, state, on_step)


def kill_worker_for_fault_injection(fault: FaultInjectionConfig, rank: int, step: int) -> None:
    """Tests only: SIGKILL this worker process if it has the configured rank, once the last checkpoint is committed.

    Waiting for the commit makes the test deterministic (a crash while a checkpoint is
    still in flight is legitimate too: the run then resumes from the one before).
    """
    import ray.train

    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    if rank == fault.kill_worker_rank:
        logger.warning("fault injection: rank %d kills its own process (pid %d) after step %d", rank, os.getpid(), step)
        os.kill(os.getpid(), signal.SIGKILL)


def report_checkpoint(
    model, optimizer, scheduler, state: TrainState, report: StepReport, tokens_per_s: float, rank: int
) -> None:
    """Every worker reports (it is a barrier); rank 0 attaches the checkpoint folder."""
    import ray.train

    latest_validation = state.validation_losses[max(state.validation_losses, key=int)]
    metrics = {"step": state.step, "loss": report.loss, "tokens_per_s": tokens_per_s,
               "tokens_trained": state.tokens_trained, "validation_loss": latest_validation,
               "validation_loss_initial": state.validation_losses.get("0")}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        if rank == 0:
            save_checkpoint(folder, model, optimizer, scheduler, state)
        checkpoint = ray.train.Checkpoint.from_directory(folder) if rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"step-{state.step:06d}")


def resume_settings(config: FinetuneConfig, model_hash: str) -> dict:
    """What a run's checkpoints were trained with and a resume must keep: the base model, LoRA,
    the optimization (all but how long and how often to validate, log and checkpoint) and the
    number of workers (each one's data position points into its own shard)."""
    rhythm = {"max_steps", "eval_every", "checkpoint_every", "log_every"}
    return {"model": model_hash, "lora": config.lora.model_dump(mode="json"),
            "train": config.train.model_dump(mode="json", exclude=rhythm),
            "num_workers": config.scaling.num_workers}  # fmt: skip


def latest_train_state(config: FinetuneConfig) -> dict | None:
    """The train state of the run's newest checkpoint in storage, or None before the first one."""
    run = storage.join(config.storage_path, config.run_name)
    if not storage.exists(run):
        return None
    states = [uri for uri in storage.list_files(run) if uri.endswith(f"/{STATE_FILE}") and "/step-" in uri]
    return json.loads(storage.read_bytes(max(states))) if states else None


def check_resumable(config: FinetuneConfig, state: dict | None, data_fingerprint: str, settings: dict) -> None:
    """Refuse, before anything starts, to resume a run whose checkpoints were trained on other rows
    or with other settings.

    A resumed run skips the rows its data position says it consumed; on another data set,
    or the same one packed differently, that would skip and repeat examples silently. And it
    restores its optimizer and schedule: a new learning rate would be ignored while the
    adapter's record said otherwise. ``state`` is the run's latest train state (:func:`latest_train_state`).
    """
    if state is None:
        return
    recorded = state.get("data_fingerprint")  # none before fingerprints
    if recorded is not None and recorded != data_fingerprint:
        raise InputError(
            f"run {config.run_name!r} in {config.storage_path} has checkpoints trained on other data (rows {recorded}, "
            f"now {data_fingerprint}): resuming it would skip and repeat examples. Start a new run with "
            f"run_name=<new name>, or train on the data and packing it was started with."
        )
    changed = changed_settings(state.get("settings"), settings)
    if changed:
        raise InputError(
            f"run {config.run_name!r} in {config.storage_path} has checkpoints trained with other settings "
            f"({'; '.join(changed)}): "
            f"a resume keeps the checkpoints' optimizer, schedule and data position. Start a new run with "
            f"run_name=<new name>, or resume with the settings it was started with (train.max_steps may grow)."
        )


def changed_settings(recorded: dict | None, current: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs (none when nothing was recorded: older checkpoints)."""
    if recorded is None:
        return []
    changes = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def even_shards(rows: list[dict], workers: int) -> tuple[list[dict], int]:
    """The rows, the first ones repeated (cycling through them when there are fewer rows than workers) so
    every worker gets as many: Ray Train's equal split of the rest would leave the last rows out of every
    epoch, silently. Returns the rows and how many repeat."""
    repeated = -len(rows) % workers
    return rows + [rows[index % len(rows)] for index in range(repeated)], repeated


def run_training(
    config: FinetuneConfig,
    model_path: str,
    train_rows: list[dict],
    validation_rows: list[dict],
    data_fingerprint: str,
    settings: dict,
):
    """Run the TorchTrainer over the packed rows; returns Ray Train's Result."""
    import ray.data
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.data.DataContext.get_current().enable_progress_bars = False  # the workers' step lines are the progress
    ordered = DataConfig.default_ingest_options()
    ordered.preserve_order = True  # the same rows in the same order after a restart: the data position holds
    location = storage.resolve(config.storage_path)
    storage.ensure_bucket(config.storage_path)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "model_path": model_path,
            "data_fingerprint": data_fingerprint,
            "settings": settings,
        },  # fmt: skip
        scaling_config=ScalingConfig(
            num_workers=config.scaling.num_workers,
            use_gpu=config.scaling.use_gpu,
            resources_per_worker={
                "CPU": config.scaling.cpus_per_worker,
                **({"GPU": 1} if config.scaling.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=location.path,
            storage_filesystem=location.filesystem if location.is_s3 else None,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=checkpoint_config(config, validated=bool(validation_rows)),
        ),
        datasets={"train": ray.data.from_items(train_rows), "validation": ray.data.from_items(validation_rows)},
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options={"train": ordered}),
    )
    return trainer.fit()


def checkpoint_config(config: FinetuneConfig, validated: bool):
    """Ray Train's CheckpointConfig: the newest ``keep_checkpoints`` kept, or with best_validation (and validation
    rows) those of lowest validation loss; Ray keeps the newest too, which a restart resumes from."""
    from ray.train import CheckpointConfig

    if config.publish_checkpoint == "best_validation" and validated:
        return CheckpointConfig(num_to_keep=config.keep_checkpoints, checkpoint_score_attribute="validation_loss",
                                checkpoint_score_order="min")  # fmt: skip
    return CheckpointConfig(num_to_keep=config.keep_checkpoints)


# -- publishing (driver) --------------------------------------------------------------------


def publish(
    config: FinetuneConfig, checkpoint_folder: str, metadata: dict
) -> tuple[ArtifactVersion, ArtifactVersion | None]:
    """Publish the adapter (and, if asked, the merged model) as new registry versions."""
    adapter = Registry(config.registry, kind="adapters").publish(
        config.adapter_name, os.path.join(checkpoint_folder, ADAPTER_FOLDER), metadata
    )
    logger.info("published adapter %s at %s", adapter.ref, adapter.uri)
    if not config.export_merged:
        return adapter, None
    with tempfile.TemporaryDirectory() as folder:
        merge_adapter(metadata["base_model"]["path"], os.path.join(checkpoint_folder, ADAPTER_FOLDER), folder)
        merged = Registry(config.registry, kind="models").publish(
            config.adapter_name, folder, {**metadata, "merged_from_adapter": adapter.ref}
        )
    logger.info("published merged model %s at %s", merged.ref, merged.uri)
    return adapter, merged


def already_published(config: FinetuneConfig, step: int) -> ArtifactVersion | None:
    """The version this run already published at ``step`` (a resubmission of a finished run starts
    no training and publishes nothing new), or None."""
    registry = Registry(config.registry, kind="adapters")
    for version in reversed(registry.versions(config.adapter_name)):  # none yet: an empty list
        artifact = registry.get(config.adapter_name, version)
        run, metrics = artifact.metadata.get("run", {}), artifact.metadata.get("metrics", {})
        if (run.get("storage_path"), run.get("run_name"), metrics.get("step")) == (
            config.storage_path,
            config.run_name,
            step,
        ):
            logger.info(
                "run %s trained no further than step %d, which it published as %s", config.run_name, step, artifact.ref
            )
            return artifact
    return None


def main(config: FinetuneConfig) -> dict:
    """Prepare the data, train (or resume) on Ray Train, publish the adapter.

    Returns:
        The run report (also printed as one JSON line).
    """
    from transformers import AutoTokenizer

    started = time.monotonic()
    logger.info("fine-tuning with config:\n%s", describe(config))
    check_quantization(config.lora, "cuda" if config.scaling.use_gpu else "cpu")
    check_model(config.model)
    model_path = str(resolve_model(config.model))
    check_target_modules(model_path, config.lora)
    check_example_length(model_path, config.data.max_seq_len)
    if warning := schedule_warning(config.train):
        logger.warning(warning)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_uri, validation_uri = data_uris(config, tokenizer)
    train_rows, train_report = packed_rows(train_uri, tokenizer, config)
    validation_rows, validation_report = (
        packed_rows(validation_uri, tokenizer, config) if validation_uri else ([], DataReport())
    )
    if not train_report.rows:
        raise InputError(f"{train_uri} holds no rows to train on")
    if not train_report.kept:
        raise InputError(
            f"all {train_report.rows} rows of {train_uri} were dropped as bad rows: {dict(train_report.dropped)}"
        )
    if validation_uri and same_uri(validation_uri, train_uri):
        logger.warning(
            "data.validation is data.train (%s): the validation loss measures memorising, not learning", train_uri
        )
    if validation_uri and not validation_rows:
        logger.warning("no usable validation rows in %s (%s): no validation loss will be measured", validation_uri,
                       validation_report.as_dict())  # fmt: skip
    if len(train_rows) < config.scaling.num_workers:
        logger.warning("only %d packed row(s) for %d workers: they train on copies of the same rows; "
                       "scaling.num_workers=%d does the same work with less overhead", len(train_rows),
                       config.scaling.num_workers, len(train_rows))  # fmt: skip
    train_rows, repeated = even_shards(train_rows, config.scaling.num_workers)
    logger.info("%d rows -> %d packed rows of <= %d tokens (%d repeated so each of %d workers gets as many; "
                "%d validation rows); shared prefixes leave out %.0f%% of the tokens",
                train_report.kept, len(train_rows),
                config.data.pack_length, repeated, config.scaling.num_workers, len(validation_rows),
                100 * shared_token_share(train_rows))  # fmt: skip
    model_hash = folder_fingerprint(resolve_model(config.model))
    data_fingerprint, settings = rows_fingerprint(train_rows), resume_settings(config, model_hash)
    previous = latest_train_state(config)
    check_resumable(config, previous, data_fingerprint, settings)
    steps_before = (previous or {}).get("step", 0)
    published = already_published(config, steps_before) if steps_before >= config.train.max_steps else None
    if published:  # a finished run resubmitted: nothing to train, no cluster needed
        return run_report(published, None, steps_before, published.metadata.get("metrics", {}), started)
    init_ray(config.ray_address)
    local = not (config.ray_address or os.environ.get("RAY_ADDRESS"))  # no autoscaler adds nodes to it
    wait_for_resources(config.scaling.resources(), 0 if local else config.scaling.resources_timeout_s,
                       f"scaling.num_workers={config.scaling.num_workers} training workers",
                       ": lower scaling.num_workers or scaling.cpus_per_worker, or add nodes")  # fmt: skip
    result = run_training(config, model_path, train_rows, validation_rows, data_fingerprint, settings)
    checkpoint, checkpoint_metrics = published_checkpoint(config, result)
    with (
        result.checkpoint.as_directory() as latest_folder,
        local_checkpoint(checkpoint, result.checkpoint, latest_folder) as folder,
    ):
        state = read_train_state(latest_folder)
        metrics = {**result.metrics, "resumed_from_steps": state.resumed_from_steps, "train_losses": state.train_losses,
                   "validation_losses": state.validation_losses, "epochs": state.epoch}  # fmt: skip
        metadata = {
            "base_model": {"name": config.model, "path": model_path, "hash": model_hash},
            "dataset": {"train_uri": train_uri, "train_hash": dataset_fingerprint(train_uri),
                        "train_documents": trained_documents(train_uri),
                        "validation_uri": validation_uri,
                        "validation_hash": dataset_fingerprint(validation_uri) if validation_uri else None,
                        "train_rows": train_report.as_dict(), "validation_rows": validation_report.as_dict(),
                        "packed_rows": len(train_rows), "repeated_rows": repeated},
            "config": config.model_dump(mode="json"),
            "metrics": metrics,
            "run": {"storage_path": config.storage_path, "run_name": config.run_name,
                    "checkpoint": checkpoint.path},
            "published_checkpoint": {"step": checkpoint_metrics["step"], "selected_by": config.publish_checkpoint,
                                     "validation_loss": checkpoint_metrics.get("validation_loss")},
        }  # fmt: skip
        published = already_published(config, state.step) if state.step == steps_before else None
        adapter, merged = (published, None) if published else publish(config, folder, metadata)
    return run_report(adapter, merged, state.step, metrics, started)


def published_checkpoint(config: FinetuneConfig, result) -> tuple[Any, dict]:
    """The checkpoint (and its reported metrics) whose adapter the run publishes: the last, or with
    ``publish_checkpoint`` best_validation the kept one of lowest validation loss."""
    latest = (result.checkpoint, result.metrics)
    if config.publish_checkpoint == "last":
        return latest
    best = lowest_validation_loss([*(result.best_checkpoints or []), latest])
    if best is None:
        logger.warning("publish_checkpoint best_validation, but no checkpoint has a validation loss (no validation "
                       "rows): the last one is published")  # fmt: skip
        return latest
    (_, chosen), (_, last) = best, latest
    logger.info("publishing the checkpoint of step %d (validation loss %.4f; the last, step %d: %s)",
                chosen["step"], chosen["validation_loss"], last["step"], last.get("validation_loss"))  # fmt: skip
    return best


def lowest_validation_loss(candidates: list[tuple[Any, dict]]) -> tuple[Any, dict] | None:
    """The (checkpoint, metrics) of lowest validation loss, the later step of equals; None when none has one."""
    validated = [candidate for candidate in candidates if candidate[1].get("validation_loss") is not None]
    return min(validated, key=lambda candidate: (candidate[1]["validation_loss"], -candidate[1]["step"]), default=None)


def local_checkpoint(checkpoint, latest, latest_folder: str):
    """``checkpoint`` as a local folder: ``latest_folder``, already there, when it is the ``latest`` one."""
    same = checkpoint.path.rstrip("/") == latest.path.rstrip("/")
    return contextlib.nullcontext(latest_folder) if same else checkpoint.as_directory()


def run_report(
    adapter: ArtifactVersion, merged: ArtifactVersion | None, steps: int, metrics: dict, started: float
) -> dict:
    """The run's report, printed as one JSON line: what was published and the training figures."""
    report = {"adapter": adapter.ref, "adapter_uri": adapter.uri, "merged_model": merged.ref if merged else None,
              "steps": steps, "published_step": adapter.metadata.get("published_checkpoint", {}).get("step", steps),
              "seconds": round(time.monotonic() - started, 1), **{
                  key: metrics.get(key) for key in ("loss", "validation_loss", "validation_loss_initial",
                                                    "tokens_per_s", "tokens_trained",
                                                    "resumed_from_steps")}}  # fmt: skip
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    run_job(__spec__, "FinetuneConfig")
