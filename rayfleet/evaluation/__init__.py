"""Evaluation: reference-based metrics, the LLM judge, bootstrap intervals and the promotion gate."""
