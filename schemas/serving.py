"""Arrow schema of the serving app's request log (Parquet in storage, read by drift and A/B monitors).

One row per request that reached model work. Never holds prompts, answers or API keys:
the prompt is a SHA-256, the user a SHA-256 of their id, and for routed requests a
low-dimensional random projection of its sentence embedding (for drift monitoring; see
:func:`rayfleet.evaluation.drift.project_embeddings`).
"""

from __future__ import annotations

import pyarrow as pa

REQUEST_LOG_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),  # chat.completions | completions
        pa.field("model", pa.string(), nullable=False),  # as requested
        pa.field("path", pa.string()),  # the path that answered (None if none did)
        pa.field("first_path", pa.string()),  # the path tried first
        pa.field("fallback", pa.bool_(), nullable=False),
        pa.field(
            "selected_by", pa.string(), nullable=False
        ),  # router | model | default (the router failed; an A/B arm is in ab_test/arm)
        pa.field("router_confidence", pa.float64()),
        pa.field("ab_test", pa.string()),
        pa.field("arm", pa.string()),
        pa.field("adapter", pa.string()),
        pa.field("status", pa.int32(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("stream", pa.bool_(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("ttft_ms", pa.float64()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),  # of all the request's answers
        pa.field("answer_tokens", pa.list_(pa.int64())),  # each answer's tokens, in index order (n of them)
        pa.field("prompt_sha256", pa.string(), nullable=False),
        pa.field("user_sha256", pa.string()),
        pa.field("prompt_embedding", pa.list_(pa.float32())),  # routed requests only
        pa.field("relevance", pa.float64()),  # best passage's score, when the router's relevance gate asked the index
    ]
)
