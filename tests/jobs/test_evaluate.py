"""The evaluation job end to end on real Ray and S3: base, adapters and RAG scored, the gate applied.

The held-out set is built from real ACL paper chunks: each question quotes the start of a
sentence and asks how it continues, so retrieval can find the passage and the reference
is that sentence. Two real peft adapters are published to the registry: one with large
random weights (garbles answers) and a zero-initialised one (answers exactly like the base
model): a gate that asks for no gain promotes the second and refuses the first. The answers come
from the transformers engine; the judge is the shipped one (vLLM, its reply format enforced).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from jobs.build_index import BuildIndexConfig
from jobs.build_index import main as build_index
from jobs.evaluate import EvaluateConfig, main
from rayfleet import storage
from rayfleet.config import load_config
from rayfleet.qa import answer_sentences
from rayfleet.registry import Registry
from rayfleet.tables import write_table
from tests.jobs.test_build_index import write_chunks

pytestmark = pytest.mark.slow


def held_out_pairs(chunks: list[dict], count: int) -> list[dict]:
    pairs = []
    for chunk in chunks:
        for sentence in answer_sentences(chunk["text"], 1, 10, 30):
            start = " ".join(sentence.split()[:10])
            pairs.append({"question": f"How does the sentence that starts with '{start}' continue?", "answer": sentence,
                          "doc_id": chunk["doc_id"], "chunk_id": chunk["chunk_id"], "origin": "generated",
                          "split": "test"})  # fmt: skip
        if len(pairs) == count:
            break
    return pairs


def publish_adapter(registry: Registry, smollm2_path, folder, garble: bool) -> str:
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=512 if garble else 16, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=not garble)  # fmt: skip
    get_peft_model(model, lora).save_pretrained(folder)
    return registry.publish("rayfleet-qa", str(folder), {"base_model": "smollm2-135m-instruct", "garbled": garble}).ref


def test_base_adapters_and_rag_are_scored_the_best_adapter_promoted_and_a_worse_one_refused(
    ray_cluster, s3_prefix, acl_chunks, smollm2_path, tmp_path
):
    chunks_uri, index_uri = storage.join(s3_prefix, "chunks"), storage.join(s3_prefix, "index")
    write_chunks(storage.join(chunks_uri, "part-1.parquet"), acl_chunks)
    build_index(BuildIndexConfig(input=chunks_uri, output=index_uri, batch_size=64))
    pairs = held_out_pairs(acl_chunks, 5)
    write_table(storage.join(s3_prefix, "qa", "test.parquet"), pa.Table.from_pylist(pairs))
    registry = Registry(storage.join(s3_prefix, "registry"))
    garbled = publish_adapter(registry, smollm2_path, tmp_path / "garbled", garble=True)
    harmless = publish_adapter(registry, smollm2_path, tmp_path / "harmless", garble=False)
    # A gate that asks for no gain: the harmless version (as good as the base model) goes live, and the
    # garbling one, worse than that incumbent, is refused whatever the order of the candidates.
    overrides = [
        f"qa={s3_prefix}/qa", f"index={index_uri}", f"registry={s3_prefix}/registry", f"output={s3_prefix}/eval",
        "engine.kind=transformers", "judge.engine.kind=vllm", "judge.engine.cpu_kv_cache_gib=1",
        "sampling.max_tokens=32", "top_k=2",
        "gate.min_improvement=0.0", "gate.require_significant_gain=false",
    ]  # fmt: skip
    candidates = [{"name": "base", "kind": "base"}, {"name": "garbled", "kind": "adapter", "adapter": garbled},
                  {"name": "harmless", "kind": "adapter", "adapter": harmless},
                  {"name": "rag", "kind": "rag"}]  # fmt: skip

    result = main(load_config(EvaluateConfig, overrides + [f"candidates={json.dumps(candidates)}"]))

    for name in ("base", "garbled", "harmless", "rag"):
        assert set(result[name]) == {"exact_match", "f1", "rouge_l", "judge"}
        assert all(0.0 <= value <= 1.0 for value in result[name].values()), "the judge's format holds every reply"
    assert result["garbled"]["f1"] < result["base"]["f1"], "a garbling adapter must score below the base model"
    assert result["harmless"]["f1"] == pytest.approx(result["base"]["f1"]), "a zero adapter answers like the base model"
    assert result["rag"]["f1"] > result["base"]["f1"], "the passage holding the answer makes RAG better"
    assert result["items"] == len(pairs)
    assert (result["judge_agreement"]["items"], result["judge_agreement"]["unparsed_judge_replies"]) == (
        4 * len(pairs),
        0,
    )
    decisions = {decision["candidate"]: decision for decision in result["promotion"]}
    assert decisions[harmless]["promote"] is True and decisions[harmless]["incumbent"] == "base"
    assert decisions[garbled]["promote"] is False and decisions[garbled]["incumbent"] == "harmless"
    assert registry.resolve("rayfleet-qa@promoted").ref == harmless
    assert registry.decisions("rayfleet-qa", int(garbled.split("@")[1]))[-1]["promote"] is False
    items_uri = result["report"].replace("report.html", "items.jsonl")
    items = [json.loads(line) for line in storage.read_bytes(items_uri).decode().splitlines()]
    cited = sum(item["chunk_id"] in {c["chunk_id"] for c in item["citations"]["rag"]} for item in items)
    assert cited >= len(items) // 2, "retrieval finds the passage of most questions"
    replies = [item["judge_replies"][name] for item in items for name in ("base", "garbled", "harmless", "rag")]
    assert len(replies) == 4 * len(pairs) and all(reply and reply.strip() for reply in replies), "each score checkable"
    report = storage.read_bytes(result["report"]).decode()
    assert "data:image/png;base64," in report and "Worst examples" in report and pairs[0]["doc_id"] in report


def test_an_unknown_adapter_fails_before_any_work_and_says_how_to_name_another(tmp_path):
    from jobs.evaluate import EvaluateConfig, resolve_adapters
    from rayfleet.registry import RegistryError

    config = load_config(EvaluateConfig, [f"registry={tmp_path}/registry"])
    with pytest.raises(
        RegistryError, match=r"candidate 'finetuned': no published adapters named 'smollm2-acl-qa'.*candidates=\["
    ):
        resolve_adapters(config)
