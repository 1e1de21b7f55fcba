"""Evaluate the base model, registry adapters and the RAG path on held-out Q&A, then gate promotion.

Run it anywhere the same way::

    python -m jobs.evaluate                                   # embedded defaults: `make quality`'s locations
    python -m jobs.evaluate qa=s3://bucket/qa/qa index=s3://bucket/index registry=s3://bucket/registry max_items=200
    ray job submit --working-dir . -- python -m jobs.evaluate config=jobs/configs/evaluate/smollm2_vllm.yaml

Candidates answer every held-out question (the ``test`` split of ``jobs.make_qa``, split by
document) through the batch engine path of every job (a Ray Data actor pool, vLLM by
default); the RAG candidate first retrieves from the index and answers from the
retrieved passages with the same prompt as the online RAG path. Each answer gets exact
match, token F1, ROUGE-L and an LLM-judge score; means come with bootstrap intervals and
the judge's rank agreement with F1 is reported. Optionally, summaries are scored against
human references (ROUGE-L and judge), and local lm-evaluation-harness tasks run on the
base and adapter candidates (``harness.tasks``). Under ``output/<run_id>/`` the job writes
``result.json``, ``items.jsonl`` (every answer, score and judge reply) and ``report.html``, and prints
one JSON line with each candidate's means and the report's location.

When an adapter candidate was evaluated and the gate is enabled, the adapter is promoted
in the registry only if it beats the incumbent (the promoted version, else the base
model) by the configured margin without regressing the guard metric; the decision is
recorded beside the version either way.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import logging
import math
import time
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from rayfleet import storage
from rayfleet.batch_inference import generate_on_ray
from rayfleet.config import BaseConfig, InputError, describe, run_job
from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.engines.base import Conversation
from rayfleet.evaluation.gate import PromotionGateConfig, decide
from rayfleet.evaluation.harness import HarnessConfig, run_harness
from rayfleet.evaluation.judge import JudgeConfig, parse_verdict
from rayfleet.evaluation.metrics import answer_tokens, rouge_l, score_answer
from rayfleet.evaluation.report import METRICS, render_report
from rayfleet.evaluation.stats import bootstrap_mean, paired_difference, rank_agreement
from rayfleet.ray_setup import WorkerPoolConfig, init_ray
from rayfleet.registry import ArtifactVersion, Registry, RegistryError
from rayfleet.retrieval.rag import (
    MIN_PASSAGE_TOKENS,
    GroundedPrompt,
    PromptTooLong,
    citations_of,
    fit_grounded_prompt,
    grounded_conversation,
)
from rayfleet.tables import new_run_id, read_input_folder
from rayfleet.training.data import document_key
from schemas import USER_QA_REQUIRED

logger = logging.getLogger("jobs.evaluate")

QA_OPTIONAL_COLUMNS = ["chunk_id", "split"]  # a Q&A set without `split` is all held-out
REFERENCE_COLUMNS = ("reference_challenge", "reference_approach", "reference_outcome")


class CandidateConfig(BaseConfig):
    """One system under evaluation."""

    name: str = Field(..., description="Label in the report and the JSON line, e.g. base, finetuned, rag.")
    kind: Literal["base", "adapter", "rag"] = Field(
        ...,
        description="base: the base model alone; adapter: the base model with a registry adapter; "
        "rag: retrieval + base model.",
    )
    adapter: str | None = Field(
        None,
        description="adapter (or rag with an adapter): registry reference name, name@<version>, "
        "name@latest or name@promoted.",
    )

    @model_validator(mode="after")
    def _adapter_when_needed(self) -> "CandidateConfig":
        if self.kind == "adapter" and not self.adapter:
            raise ValueError(f"candidate {self.name!r} of kind adapter needs `adapter` (a registry reference)")
        if self.kind == "base" and self.adapter:
            raise ValueError(f"candidate {self.name!r} of kind base takes no adapter")
        return self


class SummaryEvalConfig(BaseConfig):
    """Scoring summaries (``jobs.summarize`` output) against the documents' human references."""

    summaries: str = Field(..., description="Summaries Parquet folder (doc_id, summary).")
    documents: str = Field(
        ..., description="Documents Parquet with reference_* columns (e.g. jobs.demo_documents output)."
    )


class BootstrapConfig(BaseConfig):
    """Confidence intervals of the means."""

    samples: int = Field(1000, ge=100, description="Bootstrap resamples.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Interval coverage.")
    seed: int = Field(0, description="Resampling seed (fixed, so reports are reproducible).")


def default_candidates() -> list[CandidateConfig]:
    return [
        CandidateConfig(name="base", kind="base"),
        CandidateConfig(name="finetuned", kind="adapter", adapter="smollm2-acl-qa@latest"),
        CandidateConfig(name="rag", kind="rag"),
        CandidateConfig(name="rag_finetuned", kind="rag", adapter="smollm2-acl-qa@latest"),
    ]


class EvaluateConfig(BaseConfig):
    """Configuration of the evaluation job."""

    qa: str = Field(
        ".data/demo/qa",
        description="Held-out Q&A Parquet folder (jobs.make_qa's qa/, or jobs.demo_documents qa_output).",
    )
    split: Literal["train", "validation", "test"] = Field("test", description="Which split to score.")
    max_items: int | None = Field(None, ge=1, description="Score at most this many questions (a stable sample).")
    output: str = Field(".data/eval", description="Folder/prefix for result.json, items.jsonl, report.html.")
    registry: str = Field(
        ".data/registry", description="Registry root holding the adapters (jobs.finetune publishes there)."
    )
    index: str | None = Field(".data/demo/index", description="Index root for RAG candidates (jobs.build_index).")
    top_k: int = Field(4, ge=1, description="Passages retrieved per question for RAG candidates.")
    hybrid: bool = Field(
        True, description="RAG retrieval fuses BM25 into the dense ranking, as the serving RAG path does."
    )
    candidates: list[CandidateConfig] = Field(default_factory=default_candidates, description="Systems to score.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Base model and engine of every candidate.")
    merge_adapters: bool = Field(
        True,
        description="Run each adapter merged into the base weights: the same function without the per-token LoRA cost "
        "(sets engine.merge_adapter for every adapter candidate).",
    )
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_tokens=96), description="Answer decoding (greedy by default)."
    )
    answer_system_prompt: str | None = Field(
        None, description="System message before each question (base and adapter); none if null, as in training."
    )
    max_context_tokens: int = Field(
        768, ge=64, description="RAG: most prompt tokens of retrieved text, as the serving RAG path's setting."
    )
    rag_system_prompt: str | None = Field(
        None, description="RAG: system message before the serving path's instructions."
    )
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The LLM judge.")
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig, description="Confidence intervals.")
    gate: PromotionGateConfig = Field(default_factory=PromotionGateConfig, description="The promotion gate.")
    summaries: SummaryEvalConfig | None = Field(None, description="Also score summaries against human references.")
    harness: HarnessConfig = Field(
        default_factory=HarnessConfig,
        description="Local lm-evaluation-harness tasks for the base and adapter candidates.",
    )
    workers: WorkerPoolConfig = Field(default_factory=WorkerPoolConfig, description="Engine actor pool sizing.")
    batch_size: int = Field(32, ge=1, description="Conversations per engine batch.")
    ray_address: str | None = Field(None, description="Ray cluster address; default $RAY_ADDRESS or a local Ray.")

    @model_validator(mode="after")
    def _unique_names(self) -> "EvaluateConfig":
        names = [candidate.name for candidate in self.candidates]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"candidates need distinct names, got {names}")
        if any(candidate.kind == "rag" for candidate in self.candidates) and not self.index:
            raise ValueError("a rag candidate needs `index` (an index root built by jobs.build_index)")
        gate_metrics = {self.gate.primary_metric, self.gate.guard_metric}
        if self.gate.enabled and "judge" in gate_metrics and not self.judge.enabled:
            raise ValueError("the gate uses the judge's score but judge.enabled is false: enable the judge or gate on "
                             "f1, rouge_l or exact_match")  # fmt: skip
        if self.sampling.max_tokens >= self.engine.max_model_len:  # every question would be dropped as too long
            raise ValueError(f"sampling.max_tokens {self.sampling.max_tokens} leaves no room for a question in "
                             f"engine.max_model_len {self.engine.max_model_len}: "
                             "lower it or raise the context")  # fmt: skip
        judge_needs = self.sampling.max_tokens + self.judge.sampling.max_tokens
        if self.judge.enabled and judge_needs >= self.judge.engine.max_model_len:
            raise ValueError(f"the judge reads an answer of up to sampling.max_tokens {self.sampling.max_tokens} "
                             f"and replies "
                             f"in judge.sampling.max_tokens {self.judge.sampling.max_tokens}: more than its "
                             f"judge.engine.max_model_len {self.judge.engine.max_model_len} holds")  # fmt: skip
        return self


def load_questions(config: EvaluateConfig) -> list[dict]:
    """The held-out pairs of ``config.split``, a stable sample of ``max_items`` if set.

    Each item's ``references`` lists its acceptable answers: ``answer`` may be a string or a
    list of strings (several references; every metric takes the best), in any file; numbers (ids,
    numeric answers) read as text. Pairs without a question, an answer or a ``doc_id``, and pairs
    whose prompt leaves the engine (or the judge) no room to answer, are dropped and counted in
    the log. In a set where some pairs have a split, those without one are left out, counted.
    """
    if not storage.exists(config.qa):
        raise FileNotFoundError(
            f"no Q&A set at {config.qa}: build one with `python -m jobs.make_qa`, "
            "or `make quality` for the demo's in .data/demo/qa (see README)"
        )
    rows = read_input_folder(
        config.qa, USER_QA_REQUIRED, QA_OPTIONAL_COLUMNS, per_file=qa_columns_as_text, hint=chat_set_hint
    ).to_pylist()
    splits = collections.Counter(row["split"] for row in rows)
    if set(splits) != {None}:
        if splits[None]:
            logger.warning("%d pairs of %s have no split while the others have one: left out", splits[None], config.qa)
        rows = [row for row in rows if row["split"] == config.split]
    else:
        logger.warning(
            "the Q&A set at %s has no split column: all %d pairs are scored as held-out", config.qa, len(rows)
        )
    items, dropped = [], collections.Counter()
    for row in rows:
        references = references_of(row["answer"])
        problem = unusable_pair(row, references)
        if problem:
            dropped[problem] += 1
        else:
            items.append({**row, "references": references})
    items, dropped["too long for the context"] = within_context(config, items)
    dropped = +dropped  # the reasons that dropped some
    if dropped:
        logger.warning(
            "dropped %d of the %d %r pairs: %s", sum(dropped.values()), len(rows), config.split, dict(dropped)
        )
    if not items:
        found = ", ".join(f"{'no split' if split is None else repr(split)}: {count}" for split, count in splits.items())
        raise InputError(
            f"the Q&A set at {config.qa} has no usable {config.split!r} pairs (pairs by split: {found}); "
            "jobs.make_qa splits by document, so a few documents may fill one split only: give it larger "
            "splits.validation and splits.test (e.g. 0.3 each), then fine-tune on its new train split"
        )
    items.sort(key=lambda row: hashlib.sha256(row["question"].encode()).hexdigest())
    return items[: config.max_items] if config.max_items else items


def chat_set_hint(columns: list[str]) -> str:
    """What to read instead of a chat (SFT) set given as the Q&A set."""
    if "messages" not in columns:
        return ""
    return ": a chat (SFT) set; evaluation reads question/answer pairs (jobs.make_qa writes them to qa/ beside sft/)"


def qa_columns_as_text(table: pa.Table) -> pa.Table:
    """One file of a Q&A set with ``doc_id``, ``question``, ``chunk_id`` and ``split`` as text and ``answer``
    as a list of texts, whatever its writer chose (numbers for ids, questions or answers, one answer per
    row or several), so files combine.

    Raises:
        InputError: a column holds something else (a struct, such as SQuAD's ``answers``), named with its type.
    """
    for name in ("doc_id", "question", "chunk_id", "split"):
        if name in table.column_names and not pa.types.is_null(table.schema.field(name).type):
            table = table.set_column(table.schema.get_field_index(name), name, column_as_text(table, name))
    answers = table.column("answer")
    if pa.types.is_list(answers.type) or pa.types.is_large_list(answers.type):
        answers = column_as_text(table, "answer", pa.list_(pa.string()))
    else:
        texts = column_as_text(table, "answer").to_pylist()
        answers = pa.array([None if text is None else [text] for text in texts], pa.list_(pa.string()))
    return table.set_column(table.schema.get_field_index("answer"), "answer", answers)


def column_as_text(table: pa.Table, name: str, text_type: pa.DataType = pa.string()) -> pa.ChunkedArray:
    """``table``'s column ``name`` cast to ``text_type`` (text, or a list of texts).

    Raises:
        InputError: its values are not text or numbers (or lists of them).
    """
    try:
        return pc.cast(table.column(name), text_type)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        raise InputError(
            f"column {name!r} has type {table.schema.field(name).type}; expected text or numbers"
            + (", or lists of them" if name == "answer" else "")
        ) from None


def within_context(config: EvaluateConfig, items: list[dict]) -> tuple[list[dict], int]:
    """The items whose prompts leave the engine ``sampling.max_tokens`` to answer in (RAG prompts with
    room for at least :data:`~rayfleet.retrieval.rag.MIN_PASSAGE_TOKENS` of passages, as the serving
    path asks) and, when the judge runs, leave the judge room for its verdict on the longest answer;
    and how many did not (one such prompt would fail the whole batch)."""
    from rayfleet.engines.templates import render_prompt_ids

    tokenizer = tokenizer_of(config.engine.model)
    room = config.engine.max_model_len - config.sampling.max_tokens
    rag = any(candidate.kind == "rag" for candidate in config.candidates)
    judge = tokenizer_of(config.judge.engine.model) if config.judge.enabled else None
    judge_room = config.judge.engine.max_model_len - config.judge.sampling.max_tokens - config.sampling.max_tokens

    def fits(item: dict) -> bool:
        question = item["question"]
        if len(render_prompt_ids(tokenizer, question_conversation(config, question))) > room:
            return False
        bare_rag = grounded_conversation(question, [], tokenizer, 0, config.rag_system_prompt) if rag else []
        if bare_rag and len(render_prompt_ids(tokenizer, bare_rag)) + MIN_PASSAGE_TOKENS > room:
            return False
        if judge is None:
            return True
        verdict = config.judge.conversation(question, " | ".join(item["references"]), "")
        return len(render_prompt_ids(judge, verdict)) <= judge_room

    kept = [item for item in items if fits(item)]
    return kept, len(items) - len(kept)


@functools.cache
def tokenizer_of(model: str):
    """The tokenizer of a model reference (loaded once per process)."""
    from transformers import AutoTokenizer

    from rayfleet.assets import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model(model)))


def references_of(answer: str | list | None) -> list[str]:
    """The reference answers of one pair (``answer`` is a string or a list of them) that hold a word once
    normalised: "The" or "—" is no answer, and an empty one would score full marks (SQuAD's both-empty rule)."""
    answers = answer if isinstance(answer, list) else [answer]
    return [text for text in answers if isinstance(text, str) and answer_tokens(text)]


def unusable_pair(row: dict, references: list[str]) -> str | None:
    """Why a Q&A pair (with its :func:`references_of`) cannot be scored, or None."""
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "no question"
    if not references and references_of_any_text(row["answer"]):
        return "answer is only articles or punctuation once normalised (e.g. 'The', 'A', '...')"
    if not references:
        return "no answer"
    if not isinstance(row["doc_id"], str) or not row["doc_id"]:
        return "no doc_id"
    return None


def references_of_any_text(answer: str | list | None) -> bool:
    """Whether ``answer`` holds any non-blank text at all."""
    return any(isinstance(text, str) and text.strip() for text in (answer if isinstance(answer, list) else [answer]))


def held_out_documents_trained_on(items: list[dict], adapters: dict[str, ArtifactVersion]) -> dict[str, int | None]:
    """For each adapter candidate, how many documents of the held-out ``items`` its training set held (the
    document ids jobs.finetune records); None where that is not known (an SFT set without ``doc_id``, an
    adapter published before they were recorded). Each found is warned of."""
    held_out = {document_key(str(item["doc_id"])) for item in items if item.get("doc_id")}
    counts: dict[str, int | None] = {}
    for name, version in adapters.items():
        trained = (version.metadata.get("dataset") or {}).get("train_documents")
        counts[name] = None if trained is None else len(held_out & set(trained))
        if counts[name]:
            logger.warning("candidate %r (%s) was trained on %d of the %d held-out documents: its scores on them "
                           "are not held-out, and the gate refuses it; split the Q&A set before fine-tuning and "
                           "keep jobs.make_qa's splits.* from then on (a change moves documents between splits)",
                           name, version.ref, counts[name], len(held_out))  # fmt: skip
    return counts


def resolve_adapters(config: EvaluateConfig) -> dict[str, ArtifactVersion]:
    """The registry version behind each adapter candidate (fails clearly on unknown references).

    Raises:
        RegistryError: a reference names no published version; the message says how to name another.
    """
    registry = Registry(config.registry, kind="adapters")
    resolved = {}
    for candidate in config.candidates:
        if not candidate.adapter:
            continue
        try:
            resolved[candidate.name] = registry.resolve(candidate.adapter)
        except RegistryError as error:
            raise RegistryError(
                f"candidate {candidate.name!r}: {error}. To evaluate another adapter, list the candidates, e.g. "
                f"'candidates=[{{name: base, kind: base}}, {{name: finetuned, kind: adapter, adapter: NAME@latest}}, "
                f"{{name: rag, kind: rag}}]'"
            ) from error
    return resolved


def question_conversation(config: EvaluateConfig, question: str) -> Conversation:
    system = [{"role": "system", "content": config.answer_system_prompt}] if config.answer_system_prompt else []
    return system + [{"role": "user", "content": question}]


def build_conversations(config: EvaluateConfig, items: list[dict]) -> tuple[dict[str, list], dict[str, list]]:
    """Each candidate's conversations, and the RAG candidates' citations, one per item (RAG candidates
    share one retrieval: they differ in the adapter only)."""
    conversations, citations = {}, {}
    prompts = None
    for candidate in config.candidates:
        if candidate.kind != "rag":
            conversations[candidate.name] = [question_conversation(config, item["question"]) for item in items]
            continue
        prompts = prompts or rag_prompts(config, items)
        conversations[candidate.name] = [prompt.conversation for prompt in prompts]
        citations[candidate.name] = [citations_of(prompt.passages) for prompt in prompts]
    return conversations, citations


def rag_prompts(config: EvaluateConfig, items: list[dict]) -> list[GroundedPrompt]:
    """Each item's grounded prompt as the serving RAG path builds it: the retrieved passages within
    ``max_context_tokens``, fewer where the whole prompt would leave less than ``sampling.max_tokens``
    of the engine's context to answer in; no passages for a question whose passage labels alone
    leave no room (counted in the log)."""
    from rayfleet.retrieval.retriever import Retriever

    retriever = Retriever.load(config.index)
    tokenizer = tokenizer_of(config.engine.model)
    room = config.engine.max_model_len - config.sampling.max_tokens
    prompts, without_passages = [], 0
    for item in items:
        question = item["question"]
        hits = retriever.search(question, k=config.top_k, hybrid=config.hybrid, distinct=True)
        try:
            prompts.append(
                fit_grounded_prompt(
                    question, hits, tokenizer, config.max_context_tokens, room, config.rag_system_prompt
                )
            )
        except PromptTooLong:
            without_passages += 1
            bare = grounded_conversation(question, [], tokenizer, 0, config.rag_system_prompt)
            prompts.append(GroundedPrompt([], bare, []))
    if without_passages:
        logger.warning("%d RAG prompts left no room for passages: answered without any", without_passages)
    return prompts


def generate_answers(
    config: EvaluateConfig, conversations: dict[str, list], adapters: dict[str, ArtifactVersion]
) -> dict[str, list]:
    """Every candidate's answers; candidates on the same engine (model + adapter) share one pass."""
    registry = Registry(config.registry, kind="adapters")
    by_engine: dict[str | None, list[str]] = {}
    for candidate in config.candidates:
        by_engine.setdefault(candidate.name in adapters and adapters[candidate.name].uri or None, []).append(
            candidate.name
        )
    answers = {}
    for adapter_uri, names in by_engine.items():
        adapter_path = registry.fetch(next(adapters[n] for n in names)) if adapter_uri else None
        engine = config.engine.model_copy(update={"adapter": adapter_path, "merge_adapter": config.merge_adapters})
        batch = [conversation for name in names for conversation in conversations[name]]
        logger.info("generating %d answers for %s on %s", len(batch), names, adapter_uri or "the base model")
        generations = generate_on_ray(batch, engine, config.sampling, config.workers, config.batch_size)
        for position, name in enumerate(names):
            count = len(conversations[name])
            answers[name] = [generation.text for generation in generations[position * count : (position + 1) * count]]
    return answers


def judge_answers(
    config: EvaluateConfig, items: list[dict], answers: dict[str, list]
) -> dict[str, list[tuple[float | None, str | None]]]:
    """The judge's score (0-1, or None when its reply had no grades) of every answer, with its reply (kept
    in items.jsonl, so a score can be checked); ``(None, None)`` each without the judge."""
    names = list(answers)
    if not config.judge.enabled:
        return {name: [(None, None)] * len(items) for name in names}
    batch = [
        config.judge.conversation(item["question"], " | ".join(item["references"]), answer)
        for name in names
        for item, answer in zip(items, answers[name])
    ]
    replies = generate_on_ray(batch, config.judge.engine, config.judge.sampling, config.workers, config.batch_size)
    verdicts = [(parse_verdict(reply.text).score, reply.text) for reply in replies]
    return {name: verdicts[index * len(items) : (index + 1) * len(items)] for index, name in enumerate(names)}


def score_items(
    items: list[dict],
    answers: dict[str, list],
    judged: dict[str, list[tuple[float | None, str | None]]],
    citations: dict[str, list],
) -> list[dict]:
    """One record per question: the reference, every candidate's answer, its scores and the judge's reply."""
    records = []
    for index, item in enumerate(items):
        record = {"question": item["question"], "reference": " | ".join(item["references"]), "doc_id": item["doc_id"],
                  "chunk_id": item["chunk_id"], "answers": {}, "scores": {}, "judge_replies": {},
                  "citations": {}}  # fmt: skip
        for name in answers:
            judge_score, record["judge_replies"][name] = judged[name][index]
            record["answers"][name] = answers[name][index]
            record["scores"][name] = {**score_answer(answers[name][index], item["references"]), "judge": judge_score}
            if name in citations:
                record["citations"][name] = citations[name][index]
        records.append(record)
    return records


def summarize_scores(config: EvaluateConfig, records: list[dict]) -> dict[str, dict]:
    """Each candidate's mean and bootstrap interval of every metric."""
    bootstrap = config.bootstrap
    intervals = {}
    for name in records[0]["scores"]:
        intervals[name] = {}
        for metric in METRICS:
            values = [
                record["scores"][name][metric] for record in records if record["scores"][name][metric] is not None
            ]
            interval = (
                bootstrap_mean(values, bootstrap.samples, bootstrap.confidence, bootstrap.seed) if values else None
            )
            intervals[name][metric] = interval.as_dict() if interval else None
    return intervals


def judge_agreement(records: list[dict], judged: bool) -> dict:
    """How well the judge's ranking of answers agrees with token F1's, over all answers (``judged``:
    whether the judge ran; without it nothing agrees and nothing was unparsed)."""
    judge, f1 = [], []
    for record in records:
        for scores in record["scores"].values():
            judge.append(scores["judge"])
            f1.append(scores["f1"])
    agreement = rank_agreement(judge, f1)
    agreement["unparsed_judge_replies"] = sum(score is None for score in judge) if judged else None
    return agreement


def means(intervals: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    return {
        name: {metric: (value or {}).get("mean") for metric, value in by_metric.items()}
        for name, by_metric in intervals.items()
    }


def apply_gate(
    config: EvaluateConfig,
    adapters: dict[str, ArtifactVersion],
    records: list[dict],
    scores: dict[str, dict],
    trained_on: dict[str, int | None] | None = None,
) -> list[dict]:
    """Decide, record and (when it passes) promote each evaluated adapter version against its incumbent.

    The best-scoring versions are gated first, so the order of the candidates never decides
    which of two versions goes live. A decision that cannot be made (a metric missing), or one on held-out
    documents the version was trained on (``trained_on``: how many, by candidate), is a refusal, recorded.
    """
    trained_on = trained_on or {}
    if not config.gate.enabled:
        return []
    registry = Registry(config.registry, kind="adapters")
    base_name = next((c.name for c in config.candidates if c.kind == "base"), None)
    primary = config.gate.primary_metric
    ranked = sorted((c for c in config.candidates if c.kind == "adapter"),
                    key=lambda c: -(scores[c.name][primary] if scores[c.name][primary] is not None
                                    else -math.inf))  # fmt: skip
    decisions = []
    for candidate in ranked:
        version = adapters[candidate.name]
        promoted = registry.promoted(version.name)
        if promoted is not None and promoted.version == version.version:
            decisions.append({"candidate": version.ref, "promote": False, "reason": "already the promoted version"})
            continue
        incumbent = next(
            (
                c.name
                for c in config.candidates
                if promoted and c.kind == "adapter" and c.name in adapters and adapters[c.name].ref == promoted.ref
            ),  # fmt: skip
            None,
        )
        if trained_on.get(candidate.name):
            leaked = trained_on[candidate.name]
            decision = {"promote": False,
                        "reason": f"it was trained on {leaked} of the held-out documents: its scores there are "
                        "not held-out (jobs.make_qa's splits changed after it was trained?)"}  # fmt: skip
        elif promoted is not None and incumbent is None:
            decision = {"promote": False,
                        "reason": f"the promoted version {promoted.ref} was not evaluated in this run; "
                        f"add it as a candidate ({version.name}@promoted) to compare"}  # fmt: skip
        elif incumbent is None and base_name is None:
            decision = {"promote": False, "reason": "no incumbent to compare with: evaluate the base model too"}
        elif incumbent is not None and trained_on.get(incumbent):
            decision = {"promote": False, "incumbent": incumbent,
                        "reason": f"the promoted version {promoted.ref} was trained on {trained_on[incumbent]} of the "
                        "held-out documents: its scores there are inflated, so no comparison with it is fair; "
                        "evaluate on a test split it did not train on"}  # fmt: skip
        else:
            incumbent = incumbent or base_name
            try:
                gain = primary_gain(config, records, candidate.name, incumbent)
                decision = decide(scores[candidate.name], scores[incumbent], incumbent, config.gate, gain)
            except ValueError as error:
                decision = {"promote": False, "incumbent": incumbent, "reason": f"no decision possible: {error}"}
        decision = {**decision, "candidate": version.ref}
        registry.record_decision(version, decision)
        if decision["promote"]:
            registry.promote(version.name, version.version, decision)
        logger.info("promotion gate for %s: %s", version.ref, decision["reason"])
        decisions.append(decision)
    return decisions


def primary_gain(
    config: EvaluateConfig, records: list[dict], candidate: str, incumbent: str
) -> dict[str, float] | None:
    """The paired bootstrap interval of ``candidate``'s primary-metric gain over ``incumbent``, on the
    questions both were scored on, resampled by document, with how many documents they come from; None
    without such questions."""
    metric, bootstrap = config.gate.primary_metric, config.bootstrap
    pairs = [(r["scores"][candidate][metric], r["scores"][incumbent][metric], r["doc_id"]) for r in records]
    pairs = [pair for pair in pairs if pair[0] is not None and pair[1] is not None]
    if not pairs:
        return None
    mine, theirs, documents = zip(*pairs)
    interval = paired_difference(list(mine), list(theirs), bootstrap.samples, bootstrap.confidence, bootstrap.seed,
                                 groups=list(documents))  # fmt: skip
    return {**interval.as_dict(), "documents": len(set(documents))}


def score_summaries(config: EvaluateConfig) -> dict:
    """ROUGE-L (and judge) of summaries against the concatenated human references of each document
    (documents without any reference are left out and counted)."""
    spec, bootstrap = config.summaries, config.bootstrap
    summaries = {
        row["doc_id"]: row["summary"] for row in read_input_folder(spec.summaries, ["doc_id", "summary"]).to_pylist()
    }
    documents = read_input_folder(spec.documents, ["doc_id"], REFERENCE_COLUMNS).to_pylist()
    references = {
        doc["doc_id"]: " ".join(doc[column] for column in REFERENCE_COLUMNS if doc[column]) for doc in documents
    }
    summarized = [doc_id for doc_id in references if summaries.get(doc_id)]
    pairs = [(summaries[doc_id], references[doc_id]) for doc_id in summarized if references[doc_id].strip()]
    if not pairs:
        raise InputError(f"no summaries in {spec.summaries} match a document with references "
                         f"({', '.join(REFERENCE_COLUMNS)}) "
                         f"in {spec.documents}")  # fmt: skip
    rouge = [rouge_l(summary, reference) for summary, reference in pairs]

    def interval(values: list[float]) -> dict[str, float]:
        return bootstrap_mean(values, bootstrap.samples, bootstrap.confidence, bootstrap.seed).as_dict()

    result = {"documents": len(pairs), "without_references": len(summarized) - len(pairs), "rouge_l": interval(rouge)}
    if config.judge.enabled:
        batch = [config.judge.conversation("Summarize the paper.", reference, summary) for summary, reference in pairs]
        replies = generate_on_ray(batch, config.judge.engine, config.judge.sampling, config.workers, config.batch_size)
        judged = [score for score in (parse_verdict(reply.text).score for reply in replies) if score is not None]
        result["judge"] = interval(judged) if judged else None
    return result


def harness_scores(config: EvaluateConfig, adapters: dict[str, ArtifactVersion]) -> dict[str, dict]:
    """The local lm-evaluation-harness tasks for every base and adapter candidate."""
    from rayfleet.assets import resolve_model

    registry = Registry(config.registry, kind="adapters")
    model_path = str(resolve_model(config.engine.model))
    scores = {}
    for candidate in config.candidates:
        if candidate.kind == "rag":
            continue
        adapter_path = registry.fetch(adapters[candidate.name]) if candidate.name in adapters else None
        logger.info("lm-evaluation-harness %s on %s", config.harness.tasks, candidate.name)
        scores[candidate.name] = run_harness(config.harness, model_path, adapter_path, config.engine.dtype)
    return scores


def write_outputs(config: EvaluateConfig, result: dict, records: list[dict]) -> str:
    """result.json, items.jsonl and report.html under ``output/<run_id>/``; returns the report's URI."""
    folder = storage.join(config.output, result["run_id"])
    storage.write_bytes(storage.join(folder, "items.jsonl"), "\n".join(json.dumps(r) for r in records).encode())
    report_uri = storage.join(folder, "report.html")
    result["report"] = report_uri
    storage.write_bytes(report_uri, render_report(result, records).encode())
    storage.write_bytes(storage.join(folder, "result.json"), json.dumps(result, indent=2, default=str).encode())
    return report_uri


def main(config: EvaluateConfig) -> dict:
    started = time.monotonic()
    run_id = new_run_id()
    logger.info("evaluation %s with\n%s", run_id, describe(config))
    items = load_questions(config)
    adapters = resolve_adapters(config)
    trained_on = held_out_documents_trained_on(items, adapters)
    init_ray(config.ray_address)
    conversations, citations = build_conversations(config, items)
    answers = generate_answers(config, conversations, adapters)
    judged = judge_answers(config, items, answers)
    records = score_items(items, answers, judged, citations)
    intervals = summarize_scores(config, records)
    scores = means(intervals)
    result = {
        "run_id": run_id,
        "qa": config.qa,
        "split": config.split,
        "items": len(items),
        "candidates": {
            c.name: {
                "kind": c.kind,
                "adapter": adapters[c.name].ref if c.name in adapters else None,
                "held_out_documents_trained_on": trained_on.get(c.name),
            }
            for c in config.candidates
        },  # fmt: skip
        "intervals": intervals,
        "judge_agreement": judge_agreement(records, config.judge.enabled),
        "judge_model": config.judge.engine.model if config.judge.enabled else None,
    }
    write_outputs(config, result, records)  # the answers and scores are kept, whatever happens next
    result["promotion"] = apply_gate(config, adapters, records, scores, trained_on)
    if config.summaries:
        result["summaries"] = score_summaries(config)
    if config.harness.tasks:
        result["harness"] = harness_scores(config, adapters)
    write_outputs(config, result, records)
    result["seconds"] = round(time.monotonic() - started, 1)
    logger.info("evaluation %s done in %.0f s; report at %s", run_id, result["seconds"], result["report"])
    return {**scores,
            **{key: result[key] for key in ("report", "items", "judge_agreement", "promotion", "run_id", "seconds")},
            **{key: result[key] for key in ("summaries", "harness") if key in result}}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(run_job(__spec__, "EvaluateConfig"), default=str))
