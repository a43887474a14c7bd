"""HTML rendering of an attribution: sources shaded by score, the response highlighted."""

from __future__ import annotations

import html

from .results import Attribution

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.45}
.response{background:#fff3b0;padding:.6rem;border-radius:.4rem}
.source{padding:.5rem;margin:.4rem 0;border-radius:.4rem;border:1px solid #ddd}
.score{float:right;font-family:monospace;color:#333}
"""


def _shade(score: float, top: float) -> str:
    alpha = 0.0 if top <= 0 else max(0.0, min(1.0, score / top))
    return f"rgba(46,134,222,{alpha * 0.55:.3f})"


def attribution_html(attribution: Attribution, gold: set[int] | None = None, full_page: bool = True) -> str:
    """Render one attribution; ``gold`` marks source indices known to be relevant (for evaluation reports)."""
    top = max(attribution.scores) if attribution.scores else 0.0
    ranks = {item.index: r + 1 for r, item in enumerate(attribution.ranked())}
    rows = []
    for i, source in enumerate(attribution.sources):
        title = f"<b>{html.escape(source.title)}</b> " if source.title else ""
        mark = " ★ gold" if gold and i in gold else ""
        rows.append(
            f'<div class="source" style="background:{_shade(attribution.scores[i], top)}">'
            f'<span class="score">#{ranks[i]} {attribution.scores[i]:+.4f}{mark}</span>'
            f"[{i + 1}] {title}{html.escape(source.text)}</div>"
        )
    body = (
        f"<h3>{html.escape(attribution.query)}</h3>"
        f'<p class="response">{html.escape(attribution.response)}</p>'
        f"<p><small>scorer: {attribution.scorer} · model: {html.escape(attribution.model)}</small></p>"
        + "".join(rows)
    )
    if not full_page:
        return f"<section>{body}</section>"
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{_STYLE}</style></head><body>{body}</body></html>"


def report_html(sections: list[str], title: str = "at2-rag report") -> str:
    """Join rendered sections into one page."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>"
    )
