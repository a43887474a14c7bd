"""Citation policy: per response sentence, the source sentences with the strongest evidence, their passages,
and whether the evidence is strong enough to cite at all."""

from __future__ import annotations

import numpy as np

from .results import Attribution, Citation, CitedResponse, CitedSentence, CitedPassage


def cite(
    attribution: Attribution,
    evidence: np.ndarray,
    supported: np.ndarray | None,
    evidence_name: str,
    max_passages: int = 3,
    relative_threshold: float = 0.5,
    sentences_per_passage: int = 2,
    support: np.ndarray | None = None,
    spans: list[list[tuple[int, int]]] | None = None,
) -> CitedResponse:
    """Cite, per response sentence, the best source sentence plus any other whose evidence is at least
    ``relative_threshold`` x the best, grouped by source (at most ``max_passages`` passages).

    ``evidence`` is ``[response sentences, source sentences]``; ``supported`` says per response sentence
    whether its evidence is strong enough (the evidence model's decision). An unsupported sentence gets no
    citation and no marker and is listed in ``unsupported``. With ``supported=None`` (no calibration) every
    sentence is cited.
    """
    citations, unsupported = [], []
    for t, target in enumerate(attribution.targets):
        row = np.asarray(evidence[t], dtype=float)
        order = np.argsort(-row, kind="stable")
        best = float(row[order[0]])
        is_supported = supported is None or bool(supported[t])
        grouped: dict[int, list[int]] = {}
        if is_supported:
            for j in order:
                if row[j] < relative_threshold * best and j != order[0]:
                    break
                source = attribution.sentences[j].passage_index
                if source not in grouped and len(grouped) >= max_passages:
                    continue
                if len(grouped.setdefault(source, [])) < sentences_per_passage:
                    grouped[source].append(int(j))
        cited = [
            CitedPassage(
                index=source, number=source + 1, id=attribution.passages[source].id, score=float(row[picked[0]]),
                quote=attribution.sentences[picked[0]].text,
                sentences=[CitedSentence(index=j, start=attribution.sentences[j].start,
                                         end=attribution.sentences[j].end, text=attribution.sentences[j].text,
                                         score=float(row[j])) for j in picked],
            )
            for source, picked in grouped.items()
        ]
        citations.append(Citation(
            sentence=target.text, start=target.start, end=target.end, supported=is_supported,
            support=float(support[t]) if support is not None else None, evidence=best, passages=cited,
            unsupported_spans=[] if is_supported or spans is None else spans[t]))
        if not is_supported:
            unsupported.append(target.text)
    return CitedResponse(response=attribution.response, citations=citations,
                         formatted=render(attribution.response, citations), unsupported=unsupported,
                         evidence_model=evidence_name, attribution=attribution)


def render(response: str, citations: list[Citation]) -> str:
    """The response with ``[n]`` after each cited sentence (n = cited source index + 1, ascending)."""
    pieces, cursor = [], 0
    for citation in citations:
        pieces.append(response[cursor : citation.end])
        pieces.append("".join(f"[{n}]" for n in sorted(p.number for p in citation.passages)))
        cursor = citation.end
    pieces.append(response[cursor:])
    return "".join(pieces)
