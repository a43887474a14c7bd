"""The citation view: one self-contained HTML fragment (inline CSS, a few lines of JS, nothing fetched) that a
person reads, and that notebooks render inline (``CitedResponse._repr_html_``).

- the answer, each sentence with its ``[n]`` markers (links to the cited sentence inside its passage);
- unsupported sentences marked (support on hover), with the unsupported words inside them highlighted;
- hovering or clicking an answer sentence lights up the sentences it cites; without JS, ``[n]`` still jumps
  to the cited sentence and CSS ``:target`` highlights it;
- the cited sentences marked inside their passages (the primary signal); with compression, the dropped
  sentences struck through; each answer sentence's support printed beside it;
- passages in ranking order (fused with the retriever's when given), kept or pruned, with AT2's and the
  retriever's ranks; the legend lists only what appears.

``attribution_html`` renders a bare ``Attribution`` (sentences shaded by AT2's score: there is no citation
to mark), ``compressed_html`` a ``CompressedContext``. This module imports nothing from ``results``.

Every piece of user text is escaped: a ``<script>`` inside a passage or an answer renders as text.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import Attribution, CitedResponse, CompressedContext


STYLE = """
.at2v{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;color:#1d2430;display:grid;gap:1rem;
 grid-template-columns:minmax(0,2fr) minmax(0,3fr);max-width:1280px;margin:0 auto;box-sizing:border-box}
.at2v *{box-sizing:border-box}
.at2v h3{margin:.2rem 0 .5rem;font-size:1.05rem}
.at2v .q{grid-column:1/-1;font-weight:600;font-size:1.1rem}
.at2v .ans{background:#f7f8fb;border:1px solid #dde2ea;border-radius:.5rem;padding:.8rem;align-self:start}
.at2v .s{cursor:pointer;border-radius:.25rem;padding:0 .1rem}
.at2v .s:hover,.at2v .s.on{background:#fff1a8}
.at2v .s.uns{text-decoration:underline wavy #c0392b;text-underline-offset:3px}
.at2v .badge{font-size:.72rem;background:#c0392b;color:#fff;border-radius:.6rem;padding:0 .4rem;margin-left:.2rem;
 white-space:nowrap}
.at2v mark.u{background:#f9d3cf;color:inherit;border-bottom:2px solid #c0392b}
.at2v a.m{font-size:.78rem;vertical-align:super;text-decoration:none;color:#1f5fbf;margin-left:.08rem}
.at2v .srcs{display:flex;flex-direction:column;gap:.5rem}
.at2v .p{border:1px solid #dde2ea;border-radius:.5rem;padding:.55rem .7rem}
.at2v .p.pruned{opacity:.62;border-style:dashed}
.at2v .ph{display:flex;flex-wrap:wrap;gap:.35rem;align-items:baseline;margin-bottom:.2rem}
.at2v .tag{font-size:.72rem;border-radius:.6rem;padding:0 .45rem;background:#e7ecf3;white-space:nowrap}
.at2v .tag.kept{background:#d7f0dd;color:#1e6b34}.at2v .tag.pruned{background:#eee;color:#666}
.at2v .ps{border-radius:.2rem;padding:0 .05rem}
.at2v .ps.cit{background:#fde7b0;border-bottom:2px solid #e0a526}
.at2v .ps.drop{color:#9aa3ad;text-decoration:line-through}
.at2v .ps.lit,.at2v .ps:target{outline:2px solid #e67e22;background:#ffe0b3!important}
.at2v .sup{font-size:.72rem;color:#6b7280;margin-left:.2rem}
.at2v .key{display:inline-block;padding:0 .3rem;border-radius:.2rem}
.at2v .legend{display:flex;align-items:center;gap:.4rem;font-size:.78rem;color:#555;margin-top:.6rem;flex-wrap:wrap}
.at2v .bar{width:8rem;height:.6rem;border-radius:.3rem;background:linear-gradient(90deg,rgba(46,134,222,0),
 rgba(46,134,222,.6))}
.at2v .meta{font-size:.78rem;color:#666;margin-top:.4rem}
@media (max-width:760px){.at2v{grid-template-columns:1fr}.at2v{font-size:14px}}
"""

SCRIPT = """(function(){var r=document.getElementById(%s);if(!r)return;
function show(el){r.querySelectorAll('.lit,.s.on').forEach(function(x){x.classList.remove('lit','on')});
if(!el)return;el.classList.add('on');(el.dataset.cites||'').split(' ').forEach(function(id){
var c=id&&document.getElementById(id);if(c)c.classList.add('lit')})}
r.querySelectorAll('.s').forEach(function(el){el.addEventListener('mouseenter',function(){show(el)});
el.addEventListener('click',function(){show(el)})})})();"""


def _shade(score: float, top: float) -> str:
    alpha = 0.0 if top <= 0 else max(0.0, min(1.0, score / top))
    return f"rgba(46,134,222,{alpha * 0.6:.3f})"


def _ranks(scores: Sequence[float]) -> dict[int, int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return {i: r + 1 for r, i in enumerate(order)}


def _marked(text: str, start: int, spans: Sequence[tuple[int, int]]) -> str:
    """The sentence's text escaped, with its unsupported spans (response offsets) inside ``<mark>``."""
    pieces, cursor = [], 0
    for a, b in sorted(spans):
        a, b = max(a - start, cursor), min(b - start, len(text))
        if b <= a:
            continue
        pieces += [html.escape(text[cursor:a]), f'<mark class="u">{html.escape(text[a:b])}</mark>']
        cursor = b
    pieces.append(html.escape(text[cursor:]))
    return "".join(pieces)


def _passages(att: Attribution, uid: str, order: Sequence[int], sentence_class, sentence_title, tags) -> str:
    """Each passage (in ``order``) with its sentences wrapped: ``sentence_class(j)`` -> (css class, inline style),
    ``sentence_title(j)`` -> hover text, ``tags(i)`` -> (passage css state, tag html)."""
    by_passage: dict[int, list[int]] = {}
    for j, sentence in enumerate(att.sentences):
        by_passage.setdefault(sentence.passage_index, []).append(j)
    out = []
    for i in order:
        passage = att.passages[i]
        text, parts, pos = passage.text, [], 0
        for j in by_passage.get(i, []):
            s = att.sentences[j]
            cls, style = sentence_class(j)
            parts.append(html.escape(text[pos : s.start]))
            parts.append(f'<span class="ps {cls}" id="{uid}-p{i}-s{j}"{style} title="{html.escape(sentence_title(j))}">'
                         f"{html.escape(text[s.start : s.end])}</span>")
            pos = s.end
        parts.append(html.escape(text[pos:]))
        state, tag_html = tags(i)
        heading = f"<b>[{i + 1}]</b> {html.escape(passage.title)}" if passage.title else f"<b>[{i + 1}]</b>"
        out.append(f'<div class="p {state}" id="{uid}-p{i}"><div class="ph">{heading}{tag_html}</div>'
                   f'{"".join(parts)}</div>')
    return "".join(out)


def _frame(uid: str, title: str, answer_heading: str, answer: str, legend: Sequence[str], meta: str,
           passages: str, interactive: bool = False) -> str:
    """The two-column fragment every view shares: the question, the answer with its legend, the passages."""
    legend_html = f'<div class="legend">{" · ".join(legend)}</div>' if legend else ""
    meta_html = f'<div class="meta">{meta}</div>' if meta else ""
    script = f"<script>{SCRIPT % repr(uid)}</script>" if interactive else ""
    return (f'<div class="at2v" id="{uid}"><style>{STYLE}</style><div class="q">{html.escape(title)}</div>'
            f'<div class="ans"><h3>{answer_heading}</h3><p>{answer}</p>{legend_html}{meta_html}</div>'
            f'<div class="srcs"><h3>Passages</h3>{passages}</div>{script}</div>')


def cited_html(cited: CitedResponse, kept: Sequence[int] | None = None, ranking: Sequence[float] | None = None,
               retriever_scores: Sequence[float] | None = None, title: str | None = None,
               compressed: CompressedContext | None = None, uid: str | None = None) -> str:
    """The fragment for one cited answer. ``kept``: indices of passages kept by pruning (others are shown as
    pruned); ``ranking``: the scores passages are listed by (default AT2's); ``retriever_scores`` adds the
    retriever's rank; ``compressed``: sentences it dropped are struck through."""
    uid = uid or f"at2v-{uuid.uuid4().hex[:8]}"
    att = cited.attribution
    ranking = list(ranking) if ranking is not None else list(att.scores)
    at2_rank = _ranks(att.scores)
    retriever_rank = _ranks(list(retriever_scores)) if retriever_scores is not None else None
    cited_by: dict[int, list[int]] = {}
    for t, c in enumerate(cited.citations):
        for p in c.passages:
            for s in p.sentences:
                cited_by.setdefault(s.index, []).append(t)
    kept_sentences = None
    if compressed is not None:
        owner = {(k.passage_index, k.start) for k in compressed.kept}
        kept_sentences = {j for j, s in enumerate(att.sentences) if (s.passage_index, s.start) in owner}

    answer, cursor = [], 0
    for t, c in enumerate(cited.citations):
        answer.append(html.escape(cited.response[cursor : c.start]))
        cites = [f"{uid}-p{s_.passage_index}-s{s.index}" for src in c.passages for s in src.sentences
                 for s_ in [att.sentences[s.index]]]
        support = "" if c.support is None else f"support {c.support:.2f}"
        tip = support + ("" if c.supported else " · unsupported by the passages")
        cls = "s" if c.supported else "s uns"
        answer.append(f'<span class="{cls}" id="{uid}-a{t}" data-cites="{" ".join(cites)}" title="{tip}" '
                      f'tabindex="0">{_marked(c.sentence, c.start, c.unsupported_spans)}</span>')
        for src in sorted(c.passages, key=lambda p: p.number):
            target = f"{uid}-p{src.index}-s{src.sentences[0].index}" if src.sentences else f"{uid}-p{src.index}"
            answer.append(f'<a class="m" href="#{target}" title="{html.escape(src.quote)}">[{src.number}]</a>')
        if not c.supported:
            answer.append(f'<span class="badge" title="{tip}">unsupported{" · " + support if support else ""}</span>')
        elif support:
            answer.append(f'<span class="sup">{c.support:.2f}</span>')
        cursor = c.end
    answer.append(html.escape(cited.response[cursor:]))

    def sentence_class(j: int):
        classes = []
        if j in cited_by:
            classes.append("cit")
        if kept_sentences is not None and j not in kept_sentences:
            classes.append("drop")
        return " ".join(classes), ""

    def sentence_title(j: int) -> str:
        parts = [f"cited by answer sentence {', '.join(str(t + 1) for t in cited_by[j])}"] if j in cited_by else []
        if kept_sentences is not None:
            parts.append("kept" if j in kept_sentences else "dropped by compression")
        score = att.sentence_scores[j] if j < len(att.sentence_scores) else 0.0
        return " · ".join([*parts, f"AT2 {score:+.4f}"])

    def tags(i: int):
        state = "" if kept is None else ("kept" if i in kept else "pruned")
        out = [f'<span class="tag {state}">{state}</span>'] if state else []
        out.append(f'<span class="tag">AT2 #{at2_rank[i]}</span>')
        if retriever_rank is not None:
            out.append(f'<span class="tag">retriever #{retriever_rank[i]}</span>')
        return state, "".join(out)

    order = sorted(range(len(att.passages)), key=lambda k: -ranking[k])
    passages = _passages(att, uid, order, sentence_class, sentence_title, tags)
    n_unsupported = sum(not c.supported for c in cited.citations)
    legend = []
    if cited_by:
        legend.append('<span class="key ps cit">cited sentence</span> (hover an answer sentence to light its own)')
    if n_unsupported:
        legend.append('<span class="badge">unsupported</span> no passage supports it')
    if any(c.support is not None for c in cited.citations):
        legend.append('<span class="sup">0.97</span> support: probability the passages support the sentence')
    if kept_sentences is not None:
        legend.append(f'<span class="key ps drop">dropped</span> by compression '
                      f'({compressed.tokens_before} -> {compressed.tokens_after} tokens)')
    if kept is not None and len(kept) < len(att.passages):
        legend.append('<span class="tag pruned">pruned</span> passage not kept')
    meta = (f"attributor {html.escape(att.model)} · evidence model {html.escape(cited.evidence_model)} · "
            f"{len(cited.citations) - n_unsupported} of {len(cited.citations)} sentences supported")
    return _frame(uid, title or att.query, "Answer", "".join(answer), legend, meta, passages, interactive=True)


def attribution_html(att: Attribution, title: str | None = None, uid: str | None = None) -> str:
    """The fragment for a bare attribution: the response, and the passages (best first) with their sentences
    shaded by AT2's response-level score."""
    uid = uid or f"at2v-{uuid.uuid4().hex[:8]}"
    rank = _ranks(att.scores)
    positive = [s for s in att.sentence_scores if s > 0]
    top = max(positive) if positive else 0.0

    def sentence_class(j: int):
        score = att.sentence_scores[j] if j < len(att.sentence_scores) else 0.0
        return "", f' style="background:{_shade(score, top)}"'

    def tags(i: int):
        return "", f'<span class="tag">AT2 #{rank[i]} · {att.scores[i]:+.4f}</span>'

    passages = _passages(att, uid, sorted(range(len(att.passages)), key=lambda k: -att.scores[k]), sentence_class,
                         lambda j: f"AT2 {att.sentence_scores[j]:+.4f}" if j < len(att.sentence_scores) else "", tags)
    legend = ['passage sentences: AT2 score <span>0</span> <span class="bar"></span> <span>max</span>'] if top else []
    meta = f"scorer {html.escape(att.scorer)} · attributor {html.escape(att.model)}"
    return _frame(uid, title or att.query, "Response", html.escape(att.response), legend, meta, passages)


def compressed_html(compressed: CompressedContext, title: str | None = None, uid: str | None = None) -> str:
    """The fragment for a compression: the passages in input order, kept sentences plain, dropped ones struck."""
    uid = uid or f"at2v-{uuid.uuid4().hex[:8]}"
    att = compressed.attribution
    kept = {(k.passage_index, k.start) for k in compressed.kept}
    keep = {j for j, s in enumerate(att.sentences) if (s.passage_index, s.start) in kept}
    passages_kept = set(compressed.passages_kept)

    def tags(i: int):
        state = "kept" if i in passages_kept else "pruned"
        return state, f'<span class="tag {state}">{"kept" if i in passages_kept else "dropped"}</span>'

    passages = _passages(att, uid, range(len(att.passages)), lambda j: ("" if j in keep else "drop", ""),
                         lambda j: f"ranking {compressed.ranking[j]:.3f}", tags)
    legend = [f'<span class="key ps drop">dropped</span> sentence · {compressed.tokens_before} -> '
              f'{compressed.tokens_after} tokens ({compressed.ratio:.0%} kept), budget {html.escape(compressed.budget)}']
    return _frame(uid, title or att.query, "Answer", html.escape(att.response), legend, "", passages)


def page(fragments: Sequence[str], title: str = "at2-rag") -> str:
    """Join fragments into one standalone page."""
    body = "".join(f'<section style="margin:1.5rem 0 2.5rem">{f}</section>' for f in fragments)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"</head><body style='margin:0;padding:1rem;background:#fff'><h1 style='font:600 1.4rem system-ui;"
            f"max-width:1280px;margin:0 auto 1rem'>{html.escape(title)}</h1>{body}</body></html>")
