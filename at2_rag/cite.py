"""Citation policy: for each response sentence, the sources that carry most of its score."""

from __future__ import annotations

from .results import Attribution, Citation, CitedResponse, CitedSource
from .sources import sentence_spans


def _best_quote(text: str, sentence: str) -> str:
    """The sentence of ``text`` sharing most words with ``sentence`` (a readable anchor for the citation)."""
    words = set(sentence.lower().split())
    spans = sentence_spans(text) or [(0, len(text))]
    return max((text[a:b] for a, b in spans), key=lambda s: len(words & set(s.lower().split())))


def cite(attribution: Attribution, max_sources: int = 3, relative_threshold: float = 0.5) -> CitedResponse:
    """Cite, per sentence, the top source plus any other with score >= ``relative_threshold`` x the top one."""
    citations = []
    pieces = []
    cursor = 0
    for target in attribution.targets:
        order = sorted(range(len(target.scores)), key=lambda i: -target.scores[i])
        best = target.scores[order[0]]
        chosen = [i for i in order[:max_sources] if i == order[0] or (best > 0 and target.scores[i] >= relative_threshold * best)]
        cited = [
            CitedSource(
                index=i, id=attribution.sources[i].id, score=target.scores[i],
                quote=_best_quote(attribution.sources[i].text, target.text),
            )
            for i in chosen
        ]
        citations.append(Citation(sentence=target.text, start=target.start, end=target.end, sources=cited))
        pieces.append(attribution.response[cursor : target.end])
        pieces.append("".join(f"[{i + 1}]" for i in sorted(chosen)))
        cursor = target.end
    pieces.append(attribution.response[cursor:])
    return CitedResponse(response=attribution.response, citations=citations, formatted="".join(pieces), attribution=attribution)
