"""The result area's HTML: table rows in rank order, bars, summary, errors, escaping."""

from __future__ import annotations

import re

import pytest

from kuberank_server.ui.client import ErrorKind, PlaygroundError, RerankOutcome, ResultRow
from kuberank_server.ui.rendering import bar_percent, render_error, render_ranking


def outcome(*scores: float, document_count: int | None = None) -> RerankOutcome:
    ranking = [
        ResultRow(rank=rank, index=rank * 10, score=score, text=f"doc <{rank}> & co")
        for rank, score in enumerate(scores, start=1)
    ]
    return RerankOutcome(
        ranking=ranking,
        latency_seconds=0.1234,
        model="minilm",
        prompt_tokens=57,
        document_count=document_count or len(scores),
    )


def cells(html: str, css_class: str) -> list[str]:
    return re.findall(rf'<td class="{css_class}">(.*?)</td>', html)


def test_rows_follow_rank_with_index_and_escaped_text() -> None:
    html = render_ranking(outcome(0.9, 0.5, 0.1))

    assert cells(html, "kr-rank") == ["1", "2", "3"]
    assert cells(html, "kr-index") == ["10", "20", "30"]
    assert cells(html, "kr-text") == [f"doc &lt;{rank}&gt; &amp; co" for rank in (1, 2, 3)]
    assert re.findall(r'class="kr-score-value">([^<]*)<', html) == ["0.9000", "0.5000", "0.1000"]
    assert re.findall(r'class="kr-bar" style="width: ([^%]*)%"', html) == ["90.0", "50.0", "10.0"]


def test_summary_gives_latency_model_and_tokens() -> None:
    summary = re.search(r'<p class="kr-summary">(.*?)</p>', render_ranking(outcome(0.5, 0.4)))

    assert summary is not None
    assert summary.group(1) == (
        "2 documents ranked · latency 123 ms · model minilm · 57 prompt tokens"
    )


def test_summary_says_when_top_n_cut_the_list() -> None:
    assert "top 1 of 4 documents" in render_ranking(outcome(0.5, document_count=4))


@pytest.mark.parametrize(
    ("score", "percent"), [(0.0, 0.0), (0.4567, 45.7), (1.0, 100.0), (-0.3, 0.0), (1.7, 100.0)]
)
def test_bars_are_scores_clamped_to_the_unit_range(score: float, percent: float) -> None:
    assert bar_percent(score) == percent


def test_error_is_an_escaped_alert_with_its_kind() -> None:
    error = PlaygroundError(ErrorKind.PERMISSION, "Denied <b>now</b>", "Use a token & retry")
    html = render_error(error)

    assert html.startswith('<div class="kr-error" role="alert" data-kind="permission">')
    assert "<strong>Denied &lt;b&gt;now&lt;/b&gt;</strong>" in html
    assert "<p>Use a token &amp; retry</p>" in html
