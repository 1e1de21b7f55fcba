"""Local lm-evaluation-harness tasks on the base model and on a registry-style adapter folder."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from rayfleet.evaluation.harness import HarnessConfig, run_harness

pytestmark = pytest.mark.slow

TASK = """task: rayfleet_local_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def test_a_local_task_scores_the_base_model_and_a_zero_adapter_alike(tmp_path, smollm2_path):
    rows = [
        {"question": "What is the capital of France?", "answer": " Paris"},
        {"question": "What is 2 + 2?", "answer": " 4"},
    ]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local_qa.yaml").write_text(TASK.format(data=tmp_path / "qa.jsonl"))
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    config = HarnessConfig(tasks=["rayfleet_local_qa"], include_path=str(tmp_path / "tasks"), batch_size=2)

    base = run_harness(config, str(smollm2_path))
    adapted = run_harness(config, str(smollm2_path), str(tmp_path / "adapter"))

    assert set(base) == {"rayfleet_local_qa"} and 0.0 <= base["rayfleet_local_qa"]["exact_match,none"] <= 1.0
    assert adapted == base, "a zero-initialised LoRA adapter must not change the scores"
    with pytest.raises(ValueError, match="has no task"):
        run_harness(HarnessConfig(tasks=["no_such_task"], include_path=str(tmp_path / "tasks")), str(smollm2_path))
