"""The fine-tuning job end to end on a real local Ray (2 Train workers) and S3 API.

The Q&A set is real: questions about ACL papers answered by their human-written
summaries (aclsum). SmolLM2 overfits it on two CPU workers and the adapter is then
served by both engines; the fault and resume cases use the tiny random Llama, where
only the step accounting matters.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from transformers import AutoTokenizer

import jobs.finetune as finetune_job
from jobs.finetune import (
    FinetuneConfig,
    changed_settings,
    data_uris,
    demo_rows,
    even_shards,
    grounded_demo_rows,
    lowest_validation_loss,
    main,
    packed_rows,
    shares_prefix,
)
from rayfleet import storage
from rayfleet.assets import folder_fingerprint
from rayfleet.config import InputError, load_config
from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.registry import Registry
from rayfleet.tables import read_folder, read_table, write_table
from rayfleet.training.checkpoint import OPTIMIZER_FILE, STATE_FILE
from rayfleet.training.data import dataset_fingerprint, document_key
from rayfleet.training.model import QuantizationUnavailableError
from schemas import SFT_SCHEMA

REPO = Path(__file__).resolve().parents[2]
BAD_ROWS = [
    {"messages": [], "chunk_id": None, "doc_id": "bad-1", "origin": "user"},
    {"messages": [{"role": "user", "content": "Anything?"}, {"role": "assistant", "content": " "}], "chunk_id": None,
     "doc_id": "bad-2", "origin": "user"},
]  # fmt: skip


@pytest.fixture(scope="module")
def qa_set(local_s3) -> dict[str, str]:
    """12 training pairs from 4 papers (plus 2 bad rows) and 6 held-out pairs from 2 other papers, in S3."""
    local_s3.create_bucket("rayfleet-test")
    prefix = "s3://rayfleet-test/finetune-qa"
    write_table(f"{prefix}/train.parquet", pa.Table.from_pylist(demo_rows("train", 4) + BAD_ROWS, SFT_SCHEMA))
    write_table(f"{prefix}/validation.parquet", pa.Table.from_pylist(demo_rows("val", 2), SFT_SCHEMA))
    return {"train": f"{prefix}/train.parquet", "validation": f"{prefix}/validation.parquet"}


def job_arguments(ray_cluster, qa_set, prefix: str, model, *overrides: str) -> list[str]:
    return [
        f"model={model}", f"data.train={qa_set['train']}", f"data.validation={qa_set['validation']}",
        "data.max_seq_len=256", "data.pack_length=256", f"storage_path={prefix}/runs", f"registry={prefix}/registry",
        f"ray_address={ray_cluster.address_info['address']}", "scaling.num_workers=2", "scaling.cpus_per_worker=1",
        "lora.rank=8", "lora.alpha=16", "train.warmup_steps=1", *overrides,
    ]  # fmt: skip


def job_config(ray_cluster, qa_set, prefix: str, model, *overrides: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, job_arguments(ray_cluster, qa_set, prefix, model, *overrides))


def checkpoint_steps(config: FinetuneConfig) -> list[int]:
    """The step numbers of the checkpoints the run left in storage, by their train state files (SeaweedFS keeps
    the empty folder of a checkpoint Ray Train deleted)."""
    run = storage.join(config.storage_path, config.run_name)
    return sorted(int(uri.split("/step-")[1][:6]) for uri in storage.list_files(run) if uri.endswith(f"/{STATE_FILE}"))


def final_checkpoint(config: FinetuneConfig, step: int) -> tuple[dict, dict]:
    """The train state and optimizer/scheduler state of the run's checkpoint at ``step``."""
    folder = storage.join(config.storage_path, config.run_name, f"step-{step:06d}")
    state = json.loads(storage.read_bytes(storage.join(folder, STATE_FILE)))
    optimizer = torch.load(io.BytesIO(storage.read_bytes(storage.join(folder, OPTIMIZER_FILE))), weights_only=True)
    return state, optimizer


@pytest.fixture(scope="module")
def overfit_run(ray_cluster, qa_set, smollm2_path):
    """SmolLM2 trained on the 12 pairs for 8 steps on 2 workers; the job's report and config."""
    prefix = "s3://rayfleet-test/finetune-overfit"
    config = job_config(ray_cluster, qa_set, prefix, smollm2_path, "train.max_steps=8", "train.learning_rate=1e-3",
                        "train.eval_every=4", "train.checkpoint_every=4", "train.schedule=constant",
                        "export_merged=true")  # fmt: skip
    return main(config), config


@pytest.mark.slow
def test_overfit_on_two_workers_lowers_validation_loss_and_publishes_the_adapter(overfit_run, qa_set, smollm2_path):
    report, config = overfit_run
    assert report["steps"] == 8 and report["resumed_from_steps"] == []
    assert report["validation_loss"] < report["validation_loss_initial"], "held-out pairs: better than the base model"
    adapter = Registry(config.registry, kind="adapters").resolve(report["adapter"])
    metadata = adapter.metadata
    assert metadata["base_model"]["hash"] == folder_fingerprint(smollm2_path)
    assert metadata["dataset"]["train_uri"] == qa_set["train"]
    assert metadata["dataset"]["train_hash"] == dataset_fingerprint(qa_set["train"])
    train_ids = read_folder(qa_set["train"], ["doc_id"])["doc_id"].to_pylist()
    assert metadata["dataset"]["train_documents"] == sorted({document_key(doc_id) for doc_id in train_ids if doc_id})
    assert metadata["dataset"]["train_rows"] == {
        "rows": 14,
        "kept": 12,
        "dropped": {"empty_answer": 1, "missing_messages": 1},
        "duplicate_conversations": 0,
    }
    assert metadata["config"]["lora"]["rank"] == 8 and metadata["config"]["train"]["max_steps"] == 8
    assert metadata["git_revision"] and metadata["created_at"] and metadata["version"] == adapter.version
    assert metadata["metrics"]["train_losses"]["8"] < 0.7 * metadata["metrics"]["train_losses"]["1"], "it overfits"
    assert metadata["metrics"]["validation_losses"]["8"] < metadata["metrics"]["validation_losses"]["0"]
    files = {uri.rsplit("/", 1)[-1] for uri in storage.list_files(adapter.uri)}
    assert {"adapter_config.json", "adapter_model.safetensors", "metadata.json"} <= files
    merged = Registry(config.registry, kind="models").resolve(report["merged_model"])
    assert merged.metadata["merged_from_adapter"] == adapter.ref
    assert "model.safetensors" in {uri.rsplit("/", 1)[-1] for uri in storage.list_files(merged.uri)}


@pytest.mark.slow
def test_adapter_gives_the_same_greedy_answers_in_vllm_and_transformers(overfit_run):
    from rayfleet.batch_inference import generate_on_ray
    from rayfleet.engines.transformers_engine import TransformersEngine

    report, config = overfit_run
    registry = Registry(config.registry, kind="adapters")
    adapter_folder = registry.fetch(registry.resolve(report["adapter"]))
    model_path = config.model
    conversations = [row["messages"][:1] for row in demo_rows("train", 2)[:4]]
    sampling = SamplingConfig(max_tokens=24, temperature=0.0, repetition_penalty=1.0)
    engine_config = EngineConfig(model=model_path, adapter=adapter_folder, max_model_len=512, max_num_seqs=4)

    transformers_engine = TransformersEngine(model_path, engine_config.model_copy(update={"kind": "transformers"}))
    with_adapter = [g.text for g in transformers_engine.generate(conversations, sampling)]
    transformers_engine.close()
    base_engine = TransformersEngine(
        model_path, engine_config.model_copy(update={"kind": "transformers", "adapter": None})
    )
    base = [g.text for g in base_engine.generate(conversations, sampling)]
    base_engine.close()
    # vLLM in an actor process of its own, as the batch jobs run it. In the pytest process it fails: its CPU
    # start-up walks the globals of every loaded module and trips over Flask's context-bound proxies,
    # which the events tests' moto server has loaded by then.
    vllm = [g.text for g in generate_on_ray(conversations, engine_config.model_copy(update={"kind": "vllm"}), sampling)]

    assert with_adapter != base, "the adapter changes what the model says"
    assert vllm == with_adapter


@pytest.mark.slow
def test_a_worker_killed_mid_run_resumes_from_its_checkpoint_without_repeating_or_skipping_steps(
    ray_cluster, qa_set, s3_prefix, tiny_llama_path
):
    config = job_config(ray_cluster, qa_set, s3_prefix, tiny_llama_path, "train.max_steps=6",
                        "train.checkpoint_every=2", "train.eval_every=6", "train.gradient_accumulation_steps=2",
                        "keep_checkpoints=null", "fault_injection.kill_worker_at_step=3",
                        "fault_injection.kill_worker_rank=1", "max_failures=1")  # fmt: skip

    report = main(config)

    assert report["resumed_from_steps"] == [2], "the killed run restarted from its step-2 checkpoint"
    assert report["steps"] == 6 and checkpoint_steps(config) == [2, 4, 6]
    state, optimizer = final_checkpoint(config, 6)
    assert optimizer["scheduler"]["last_epoch"] == 6
    assert {float(entry["step"]) for entry in optimizer["optimizer"]["state"].values()} == {6.0}, (
        "6 updates, no more, no less"
    )
    assert sorted(map(int, state["train_losses"])) == [1, 2, 3, 4, 5, 6]
    packed, _ = packed_rows(qa_set["train"], AutoTokenizer.from_pretrained(tiny_llama_path), config)
    rows_per_epoch = len(even_shards(packed, 2)[0]) // 2
    assert state["epoch"] * rows_per_epoch + state["rows_in_epoch"] == 6 * 2, (
        "each worker read 6 steps x 2 rows, no more"
    )


def contradicting_pairs(answer: str) -> pa.Table:
    questions = [f"Which code does form {n} of the archive carry?" for n in range(8)]
    return pa.Table.from_pylist([
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
         "chunk_id": None, "doc_id": f"form-{n}", "origin": "user"}
        for n, question in enumerate(questions)
    ], SFT_SCHEMA)  # fmt: skip


@pytest.mark.slow
def test_best_validation_publishes_the_checkpoint_of_lowest_validation_loss_not_the_last(
    ray_cluster, s3_prefix, tiny_llama_path
):
    """Held-out answers that contradict the trained ones: training past the first steps only makes
    validation worse, so the run's best checkpoint is not its last."""
    data = {"train": f"{s3_prefix}/qa/train.parquet", "validation": f"{s3_prefix}/qa/validation.parquet"}
    write_table(data["train"], contradicting_pairs(" ".join(["alpha bravo charlie"] * 12)))
    write_table(data["validation"], contradicting_pairs(" ".join(["7 8 9"] * 12)))
    config = job_config(ray_cluster, data, s3_prefix, tiny_llama_path, "scaling.num_workers=1", "train.max_steps=4",
                        "train.eval_every=1", "train.checkpoint_every=1", "train.learning_rate=1e-2",
                        "train.schedule=constant", "keep_checkpoints=1",
                        "publish_checkpoint=best_validation")  # fmt: skip

    report = main(config)

    adapter = Registry(config.registry, kind="adapters").resolve(report["adapter"])
    losses = {int(step): loss for step, loss in adapter.metadata["metrics"]["validation_losses"].items() if step != "0"}
    best = min(losses, key=losses.get)
    assert report["steps"] == 4 and best < 4, f"validation got worse after its best step: {losses}"
    assert report["published_step"] == adapter.metadata["published_checkpoint"]["step"] == best
    assert adapter.metadata["published_checkpoint"]["validation_loss"] == pytest.approx(losses[best])
    assert checkpoint_steps(config) == [best, 4], "kept: the checkpoint of lowest validation loss, and the newest"
    checkpoint = storage.join(config.storage_path, config.run_name, f"step-{best:06d}", "adapter")
    assert storage.read_bytes(storage.join(adapter.uri, "adapter_model.safetensors")) == storage.read_bytes(
        storage.join(checkpoint, "adapter_model.safetensors")
    ), "the published adapter is that checkpoint's"


def test_the_lowest_validation_loss_wins_the_later_of_equals_and_unvalidated_checkpoints_never():
    candidates = [("a", {"step": 2, "validation_loss": 1.5}), ("b", {"step": 4, "validation_loss": None}),
                  ("c", {"step": 6, "validation_loss": 1.5}), ("d", {"step": 8, "validation_loss": 1.9})]  # fmt: skip
    assert lowest_validation_loss(candidates)[0] == "c"
    assert lowest_validation_loss([("b", {"step": 4, "validation_loss": None})]) is None


def test_best_validation_needs_a_validation_loss_at_every_checkpoint():
    with pytest.raises(ValueError, match="checkpoint_every 5 is not a multiple of train.eval_every 10"):
        load_config(FinetuneConfig, ["publish_checkpoint=best_validation", "train.checkpoint_every=5"])
    assert load_config(FinetuneConfig, ["publish_checkpoint=best_validation", "train.checkpoint_every=20"])


def run_from_the_command_line(arguments: list[str]) -> dict:
    """``python -m jobs.finetune``, as ``ray job submit`` runs it: the job's code is ``__main__`` there,
    which Ray would pickle by value into the Train workers (its validated config classes fail that)."""
    done = subprocess.run([sys.executable, "-m", "jobs.finetune", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_run_from_the_command_line_resubmitted_resumes_and_publishes_a_new_version(
    ray_cluster, qa_set, s3_prefix, tiny_llama_path, monkeypatch
):
    first = run_from_the_command_line(
        job_arguments(ray_cluster, qa_set, s3_prefix, tiny_llama_path, "train.max_steps=2", "train.checkpoint_every=2")
    )
    second = main(
        job_config(ray_cluster, qa_set, s3_prefix, tiny_llama_path, "train.max_steps=4", "train.checkpoint_every=2")
    )

    assert (first["steps"], first["resumed_from_steps"]) == (2, [])
    assert (second["steps"], second["resumed_from_steps"]) == (4, [2])
    assert second["tokens_trained"] > first["tokens_trained"], "the count goes on from the first run's"
    registry = Registry(f"{s3_prefix}/registry", kind="adapters")
    assert registry.versions("smollm2-acl-qa") == [1, 2]

    # The finished run, resubmitted as it was: nothing to train, nothing new to publish, no cluster needed.
    def training_that_must_not_start(*arguments, **options):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(finetune_job, "run_training", training_that_must_not_start)
    again = main(
        job_config(ray_cluster, qa_set, s3_prefix, tiny_llama_path, "train.max_steps=4", "train.checkpoint_every=2")
    )
    assert again["adapter"] == second["adapter"] and registry.versions("smollm2-acl-qa") == [1, 2]
    assert (again["steps"], again["tokens_trained"]) == (4, second["tokens_trained"])
    # ...and with another learning rate: the restored optimizer would ignore it, so it is refused.
    relearned = job_config(
        ray_cluster, qa_set, s3_prefix, tiny_llama_path, "train.max_steps=6", "train.learning_rate=1e-3"
    )
    with pytest.raises(ValueError, match=r"other settings \(train.learning_rate: 0.0005 -> 0.001\)"):
        main(relearned)

    repacked = job_config(ray_cluster, qa_set, s3_prefix, tiny_llama_path, "train.max_steps=6", "data.pack_length=300")
    with pytest.raises(ValueError, match="trained on other data"):
        main(repacked)
    assert checkpoint_steps(repacked) == [2, 4], "the refused resume trained nothing"


def test_qlora_on_a_cpu_cluster_fails_before_anything_starts(tmp_path):
    config = load_config(FinetuneConfig, ["lora.quantization=4bit", f"storage_path={tmp_path}"])
    with pytest.raises(QuantizationUnavailableError, match="needs a CUDA GPU"):
        main(config)
    assert not list(tmp_path.iterdir()), "nothing was built or started"


@pytest.mark.parametrize("share, use_gpu, expected", [("auto", False, True), ("auto", True, False), (True, True, True),
                                                      ("off", False, False)])  # fmt: skip
def test_shared_prefixes_are_on_for_cpu_training_unless_the_config_says_otherwise(share, use_gpu, expected):
    config = FinetuneConfig.model_validate({"data": {"share_prefix": share}, "scaling": {"use_gpu": use_gpu}})
    assert shares_prefix(config) is expected


def test_grounded_demo_rows_ask_the_rag_prompt_over_the_papers_passages(smollm2_path):
    from rayfleet.retrieval.rag import RAG_INSTRUCTIONS

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    closed_book = demo_rows("train", 3)
    grounded = grounded_demo_rows("train", 3, 200, tokenizer, answer="summary")

    assert len(grounded) == len(closed_book) == 9
    for row, plain in zip(grounded, closed_book):
        system, user, answer = row["messages"]
        assert system == {"role": "system", "content": RAG_INSTRUCTIONS}
        assert user["content"].endswith(f"Question: {plain['messages'][0]['content']}")
        title = re.search(r'"(.+)"', plain["messages"][0]["content"]).group(1)
        assert f"[1] ({title})" in user["content"], "BM25 ranks the asked paper's passage (named by title) first"
        assert answer == plain["messages"][1], "the answer is the same human summary"
        context = user["content"].split("\n\nQuestion: ")[0]
        assert len(tokenizer(context, add_special_tokens=False)["input_ids"]) <= 200 + 40, "passages fit the budget"


def test_an_extractive_grounded_answer_is_the_cited_passages_sentence_closest_to_the_human_summary(smollm2_path):
    from rayfleet.evaluation.metrics import token_f1

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    summaries = [row["messages"][1]["content"] for row in demo_rows("train", 2)]
    extractive = grounded_demo_rows("train", 2, 768, tokenizer, answer="best_sentence")

    for row, summary in zip(extractive, summaries):
        reply = row["messages"][-1]["content"]
        sentence, number = re.fullmatch(r"(.+) \[(\d+)\]", reply).groups()
        passages = re.split(r"\n\n(?=\[\d+\] \()", row["messages"][1]["content"].split("\n\nQuestion: ")[0])
        cited = next(p for p in passages if re.match(rf"(Context:\n)?\[{number}\] ", p))
        assert sentence in cited, "the answer is copied from the passage it cites"
        texts = [re.sub(r"^(Context:\n)?\[\d+\] \(.*?\) ", "", p) for p in passages]  # the labels are not candidates
        every_sentence = [s for p in texts for s in re.split(r"(?<=[.!?])\s+|\n+", p) if s.strip()]
        assert token_f1(sentence, summary) == pytest.approx(max(token_f1(s, summary) for s in every_sentence))
        assert token_f1(sentence, summary) > 0


def test_the_demo_set_is_built_once_per_setting_and_rebuilt_when_a_setting_changes(smollm2_path, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    settings = [f"storage_path={tmp_path}", "data.demo_train_papers=2", "data.demo_validation_papers=1",
                "data.demo_grounded_papers=0"]  # fmt: skip
    closed_book = data_uris(load_config(FinetuneConfig, settings), tokenizer)
    grounded = data_uris(load_config(FinetuneConfig, [*settings, "data.demo_grounded_papers=1"]), tokenizer)
    extractive = data_uris(
        load_config(
            FinetuneConfig, [*settings, "data.demo_grounded_papers=1", "data.demo_grounded_answer=best_sentence"]
        ),
        tokenizer,
    )

    assert len({closed_book, grounded, extractive}) == 3
    assert data_uris(load_config(FinetuneConfig, settings), tokenizer) == closed_book
    rows = {uri: read_table(uri).num_rows for uri in [*closed_book, *grounded]}
    assert [rows[uri] for uri in closed_book] == [6, 3]
    assert [rows[uri] for uri in grounded] == [6 + 3, 3 + 3], "one paper's three questions again, grounded"

    extra_train, extra_validation = data_uris(
        load_config(FinetuneConfig, [*settings, "data.demo_extra_train_papers=2"]), tokenizer
    )
    assert extra_validation != closed_book[1] and read_table(extra_validation).equals(read_table(closed_book[1]))
    trained, held_out = (
        set(read_table(uri, ["doc_id"]).column("doc_id").to_pylist()) for uri in (extra_train, extra_validation)
    )
    val_papers = [row["doc_id"] for row in demo_rows("val", 3)[::3]]
    assert trained - {row["doc_id"] for row in demo_rows("train", 2)} == set(
        val_papers[1:3]
    )  # the val papers after the held-out one
    assert not trained & held_out


@pytest.mark.parametrize("rows, workers, repeated", [(5, 2, 1), (6, 2, 0), (5, 4, 3), (1, 1, 0), (1, 2, 1), (2, 8, 6)])
def test_every_worker_gets_as_many_rows_and_no_row_is_left_out(rows, workers, repeated):
    padded, count = even_shards([{"row": index} for index in range(rows)], workers)
    assert count == repeated and len(padded) % workers == 0
    assert {row["row"] for row in padded} == set(range(rows))


def test_changed_settings_are_named_and_older_checkpoints_without_them_pass():
    recorded = {"model": "abc", "lora": {"rank": 8}, "train": {"learning_rate": 2e-4}, "num_workers": 2}
    assert changed_settings(recorded, recorded) == []
    assert changed_settings(None, recorded) == []
    changed = {**recorded, "lora": {"rank": 16}, "num_workers": 4}
    assert changed_settings(recorded, changed) == ["lora.rank: 8 -> 16", "num_workers: 2 -> 4"]


@pytest.mark.parametrize("override, message", [
    ("adapter_name=bot@v2", "bad registry name"), ("adapter_name=..", "bad registry name"),
    ("data.validation=somewhere", "without data.train"), ("data.max_seq_len=2048", "above data.pack_length"),
    ("data.demo_extra_train_papers=31", "more than the 50 papers"),
    ("run_name=../../escape", "bad registry name"), ("run_name=", "bad registry name"),
    ("run_name=my run ü", "bad registry name"),
])  # fmt: skip
def test_settings_that_would_be_ignored_or_not_resolve_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(FinetuneConfig, [override])


def test_a_set_whose_every_row_is_bad_stops_with_the_reasons(tmp_path):
    write_table(str(tmp_path / "train.parquet"), pa.Table.from_pylist(BAD_ROWS, SFT_SCHEMA))
    with pytest.raises(
        ValueError, match=r"all 2 rows of .* were dropped as bad rows: \{'missing_messages': 1, 'empty_answer': 1\}"
    ):
        main(load_config(FinetuneConfig, [f"data.train={tmp_path}/train.parquet", f"storage_path={tmp_path}/runs"]))


def test_an_empty_set_a_damaged_file_and_a_folder_with_held_out_splits_are_refused_by_name(tmp_path):
    def run(train: str) -> None:
        main(load_config(FinetuneConfig, [f"data.train={train}", f"storage_path={tmp_path}/runs"]))

    write_table(str(tmp_path / "empty.parquet"), pa.Table.from_pylist([], SFT_SCHEMA))
    with pytest.raises(InputError, match=r"empty.parquet holds no rows to train on"):
        run(f"{tmp_path}/empty.parquet")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "part-0.parquet").write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(InputError, match=r"part-0.parquet is not a readable Parquet file"):
        run(f"{tmp_path}/damaged")
    (tmp_path / "sft").mkdir()
    for split in ("train", "validation", "test"):
        write_table(str(tmp_path / "sft" / f"{split}.parquet"), pa.Table.from_pylist(BAD_ROWS, SFT_SCHEMA))
    with pytest.raises(
        InputError, match=r"held-out splits \['test.parquet', 'validation.parquet'\] .* data.train=.*sft/train.parquet"
    ):
        run(f"{tmp_path}/sft")
    with pytest.raises(InputError, match=r"data.max_seq_len 9000 is above the 8192 positions of .*smollm2"):
        main(load_config(FinetuneConfig, [f"data.train={tmp_path}/sft/train.parquet", "data.max_seq_len=9000",
                                          "data.pack_length=9000", f"storage_path={tmp_path}/runs"]))  # fmt: skip
    with pytest.raises(InputError, match=r"data.validation=.*/sft holds data.train's file\(s\) \['train.parquet'\]"):
        main(load_config(FinetuneConfig, [f"data.train={tmp_path}/sft/train.parquet", f"data.validation={tmp_path}/sft",
                                          f"storage_path={tmp_path}/runs"]))  # fmt: skip
