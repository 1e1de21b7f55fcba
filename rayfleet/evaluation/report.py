"""The evaluation's HTML report: metric bars with bootstrap intervals, per-document breakdown, worst examples.

Plots are drawn with matplotlib and embedded as PNG data, so the report is one
self-contained file that can sit in S3 and open anywhere.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = ("exact_match", "f1", "rouge_l", "judge")


def measured(interval: dict | None) -> bool:
    """Whether a metric's interval holds a measured mean (not absent, not NaN)."""
    return bool(interval) and interval["mean"] == interval["mean"]


def charted_metrics(summary: dict[str, dict]) -> list[str]:
    """The metrics some candidate has a value for: one none has (the judge turned off) is no bar at 0."""
    return [metric for metric in METRICS if any(measured(intervals.get(metric)) for intervals in summary.values())]


def metric_bars_png(summary: dict[str, dict]) -> bytes:
    """One group of bars per measured metric, one bar per candidate, with interval whiskers; a candidate
    without a value for a metric gets "n/a" where its bar would be."""
    candidates, metrics = list(summary), charted_metrics(summary)
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(candidates), 1)
    for offset, name in enumerate(candidates):
        means, errors = [], [[], []]
        positions = [index + offset * width for index in range(len(metrics))]
        for metric, position in zip(metrics, positions):
            interval = summary[name].get(metric)
            if not measured(interval):
                interval = {"mean": 0.0, "low": 0.0, "high": 0.0}
                axis.text(position, 0.02, "n/a", ha="center", rotation=90, fontsize=8)
            mean = interval["mean"]
            means.append(mean)
            errors[0].append(max(mean - interval["low"], 0) if interval["low"] == interval["low"] else 0)
            errors[1].append(max(interval["high"] - mean, 0) if interval["high"] == interval["high"] else 0)
        axis.bar(positions, means, width, yerr=errors, capsize=3, label=name)
    axis.set_xticks([index + width * (len(candidates) - 1) / 2 for index in range(len(metrics))], metrics)
    axis.set_ylim(0, 1)
    axis.set_ylabel("mean (95% bootstrap interval)")
    axis.legend()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def per_document_f1(items: list[dict], candidates: list[str]) -> dict[str, dict[str, float]]:
    """Mean F1 per document and candidate."""
    totals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        for name in candidates:
            totals[item["doc_id"]][name].append(item["scores"][name]["f1"])
    return {
        doc: {name: sum(values) / len(values) for name, values in by_name.items()} for doc, by_name in totals.items()
    }


def render_report(result: dict, items: list[dict], worst: int = 10) -> str:
    """The whole report as one HTML page."""
    candidates = list(result["candidates"])
    summary = {name: result["intervals"][name] for name in candidates}
    chart = base64.b64encode(metric_bars_png(summary)).decode()
    escape = html.escape
    rows = "".join(
        f"<tr><td>{escape(name)}</td>" + "".join(_cell(summary[name].get(metric)) for metric in METRICS) + "</tr>"
        for name in candidates
    )
    documents = per_document_f1(items, candidates)
    document_rows = "".join(
        f"<tr><td>{escape(doc)}</td>" + "".join(f"<td>{by_name.get(name, 0):.3f}</td>" for name in candidates) + "</tr>"
        for doc, by_name in sorted(documents.items())
    )
    reference_name = candidates[-1]
    worst_items = sorted(items, key=lambda item: item["scores"][reference_name]["f1"])[:worst]
    example_rows = "".join(
        f"<tr><td>{escape(item['question'])}</td><td>{escape(item['reference'])}</td>"
        + "".join(
            f"<td>{escape(item['answers'][name])}<br><small>F1 {item['scores'][name]['f1']:.2f}</small></td>"
            for name in candidates
        )  # fmt: skip
        + "</tr>"
        for item in worst_items
    )
    header = "".join(f"<th>{escape(name)}</th>" for name in candidates)
    agreement = escape(agreement_text(result.get("judge_agreement") or {}))
    gate = promotion_html(result.get("promotion") or [])
    return f"""<!doctype html><html><head><meta charset="utf-8">\
<title>rayfleet evaluation {escape(result["run_id"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}</style>
</head><body><h1>Evaluation {escape(result["run_id"])}</h1>
<p>{result["items"]} held-out questions from {escape(result["qa"])} (split {escape(result["split"])}).</p>
<h2>Metrics</h2><img src="data:image/png;base64,{chart}" alt="metric bars">
<table><tr><th>candidate</th>{"".join(f"<th>{m}</th>" for m in METRICS)}</tr>{rows}</table>
<p>Judge agreement with token F1 (Spearman): {agreement}</p>
<h2>Promotion gate</h2>{gate}
<h2>Per document (mean F1)</h2><table><tr><th>doc_id</th>{header}</tr>{document_rows}</table>
<h2>Worst examples (by {escape(reference_name)} F1)</h2>
<table><tr><th>question</th><th>reference</th>{header}</tr>{example_rows}</table>
</body></html>"""


def agreement_text(agreement: dict) -> str:
    """The judge's rank agreement with token F1 as a sentence."""
    unparsed = agreement.get("unparsed_judge_replies")
    if unparsed is None:
        return "not measured: the judge did not run"
    if agreement.get("spearman") is None:
        told = f"not measurable on {agreement.get('items', 0)} judged answers (too few, or every score the same)"
    else:
        told = f"ρ = {agreement['spearman']:+.2f} (p = {agreement['p_value']:.2g}, {agreement['items']} answers)"
    return f"{told}; {unparsed} judge replies unparsed"


def promotion_html(decisions: list[dict]) -> str:
    """Each gated adapter version: promoted or refused, against what, and why."""
    if not decisions:
        return "<p>No adapter version was gated (the gate is off, or no adapter was evaluated).</p>"
    escape = html.escape
    rows = "".join(
        f"<li><b>{escape(str(decision['candidate']))}</b>: {'promoted' if decision['promote'] else 'not promoted'}"
        + (f" over {escape(str(decision['incumbent']))}" if decision.get("incumbent") else "")
        + f": {escape(str(decision['reason']))}</li>"
        for decision in decisions
    )
    return f"<ul>{rows}</ul>"


def _cell(interval: dict | None) -> str:
    if not interval or interval["mean"] != interval["mean"]:
        return "<td>n/a</td>"
    return f"<td>{interval['mean']:.3f} <small>[{interval['low']:.3f}, {interval['high']:.3f}]</small></td>"
