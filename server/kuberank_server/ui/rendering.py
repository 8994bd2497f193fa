"""HTML for the playground's result area: the ranking table with score bars, or an error.

Every text that came from a person or a server is HTML-escaped here.
"""

from __future__ import annotations

from html import escape

from kuberank_server.ui.client import PlaygroundError, RerankOutcome

# Scoped to the result component by Gradio (`gr.HTML(css_template=...)`).
RESULT_CSS = """
.kr-summary { margin: 0 0 0.5em; color: var(--body-text-color-subdued); }
table.kr-ranking { width: 100%; border-collapse: collapse; border: 0; }
table.kr-ranking th, table.kr-ranking td {
  padding: 0.35em 0.6em; border: 0 solid var(--border-color-primary); border-bottom-width: 1px;
  text-align: left; vertical-align: middle;
}
table.kr-ranking td.kr-rank, table.kr-ranking td.kr-index { width: 4em; text-align: right; }
table.kr-ranking td.kr-score { width: 14em; }
.kr-bar-track { background: var(--background-fill-secondary); border-radius: 3px; height: 0.6em; }
.kr-bar { background: var(--color-accent); border-radius: 3px; height: 100%; }
.kr-score-value { font-variant-numeric: tabular-nums; font-size: 0.9em; }
.kr-error {
  border: 1px solid #d33; border-left-width: 6px; border-radius: 4px;
  padding: 0.6em 0.9em; background: rgba(221, 51, 51, 0.08);
}
.kr-error p { margin: 0.3em 0 0; }
"""


def render_ranking(outcome: RerankOutcome) -> str:
    shown = len(outcome.ranking)
    counted = (
        f"{outcome.document_count} documents ranked"
        if shown == outcome.document_count
        else f"top {shown} of {outcome.document_count} documents"
    )
    details = [counted, f"latency {outcome.latency_seconds * 1000:.0f} ms"]
    if outcome.model:
        details.append(f"model {escape(outcome.model)}")
    if outcome.prompt_tokens is not None:
        details.append(f"{outcome.prompt_tokens} prompt tokens")
    rows = "\n".join(
        f'<tr><td class="kr-rank">{item.rank}</td>'
        f'<td class="kr-score"><div class="kr-score-value">{item.score:.4f}</div>'
        f'<div class="kr-bar-track"><div class="kr-bar" style="width: {bar_percent(item.score)}%">'
        f"</div></div></td>"
        f'<td class="kr-index">{item.index}</td>'
        f'<td class="kr-text">{escape(item.text)}</td></tr>'
        for item in outcome.ranking
    )
    return (
        f'<p class="kr-summary">{" · ".join(details)}</p>'
        '<table class="kr-ranking"><thead><tr><th>Rank</th><th>Score</th>'
        "<th>Index</th><th>Document</th></tr></thead>"
        f"<tbody>\n{rows}\n</tbody></table>"
    )


def render_error(error: PlaygroundError) -> str:
    return (
        f'<div class="kr-error" role="alert" data-kind="{error.kind}">'
        f"<strong>{escape(error.title)}</strong><p>{escape(error.advice)}</p></div>"
    )


def bar_percent(score: float) -> float:
    """Bar length for a relevance score: rerank scores lie in [0, 1]; cosine may dip below 0."""
    return round(min(max(score, 0.0), 1.0) * 100, 1)
