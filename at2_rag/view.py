"""The citation view: one self-contained HTML fragment (inline CSS, a few lines of JS, nothing fetched) that a
person reads, and that notebooks render inline (``CitedResponse._repr_html_``).

- the answer, each sentence with its ``[n]`` markers (links to the cited sentence inside its passage);
- unsupported sentences marked (support on hover), with the unsupported words inside them highlighted;
- hovering or clicking an answer sentence lights up the sentences it cites; without JS, ``[n]`` still jumps
  to the cited sentence and CSS ``:target`` highlights it;
- source sentences shaded by AT2's score, max-normalised per answer, with a legend;
- passages in ranking order (fused with the retriever's when given), kept or pruned, with AT2's and the
  retriever's ranks.

Every piece of user text is escaped: a ``<script>`` inside a passage or an answer renders as text.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Sequence

from .results import CitedResponse

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
.at2v .ps.lit,.at2v .ps:target{outline:2px solid #e67e22;background:#ffe0b3!important}
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


def cited_html(cited: CitedResponse, kept: Sequence[int] | None = None, ranking: Sequence[float] | None = None,
               retriever_scores: Sequence[float] | None = None, title: str | None = None,
               uid: str | None = None) -> str:
    """The fragment for one cited answer. ``kept``: indices of passages kept by pruning (others are shown as
    pruned); ``ranking``: the scores passages are listed by (default AT2's); ``retriever_scores`` adds the
    retriever's rank."""
    uid = uid or f"at2v-{uuid.uuid4().hex[:8]}"
    att = cited.attribution
    ranking = list(ranking) if ranking is not None else list(att.scores)
    at2_rank = _ranks(att.scores)
    retriever_rank = _ranks(list(retriever_scores)) if retriever_scores is not None else None
    by_source: dict[int, list[int]] = {}
    for j, sentence in enumerate(att.sentences):
        by_source.setdefault(sentence.source_index, []).append(j)
    positive = [s for s in att.sentence_scores if s > 0]
    top = max(positive) if positive else 0.0

    def sid(j: int) -> str:
        return f"{uid}-p{att.sentences[j].source_index}-s{j}"

    answer, cursor = [], 0
    for t, c in enumerate(cited.citations):
        answer.append(html.escape(cited.response[cursor : c.start]))
        cites = [sid(s.index) for src in c.sources for s in src.sentences]
        tip = f"support {c.support:.2f}" + ("" if c.supported else " · unsupported by the passages")
        cls = "s" if c.supported else "s uns"
        answer.append(f'<span class="{cls}" id="{uid}-a{t}" data-cites="{" ".join(cites)}" title="{tip}" '
                      f'tabindex="0">{_marked(c.sentence, c.start, c.unsupported_spans)}</span>')
        for src in sorted(c.sources, key=lambda s: s.index):
            target = sid(src.sentences[0].index) if src.sentences else f"{uid}-p{src.index}"
            answer.append(f'<a class="m" href="#{target}" title="{html.escape(src.quote)}">[{src.index + 1}]</a>')
        if not c.supported:
            answer.append(f'<span class="badge" title="{tip}">unsupported</span>')
        cursor = c.end
    answer.append(html.escape(cited.response[cursor:]))

    passages = []
    for i in sorted(range(len(att.sources)), key=lambda k: -ranking[k]):
        source = att.sources[i]
        text, parts, pos = source.text, [], 0
        for j in by_source.get(i, []):
            s = att.sentences[j]
            parts.append(html.escape(text[pos : s.start]))
            score = att.sentence_scores[j] if j < len(att.sentence_scores) else 0.0
            parts.append(f'<span class="ps" id="{sid(j)}" style="background:{_shade(score, top)}" '
                         f'title="AT2 {score:+.4f}">{html.escape(text[s.start : s.end])}</span>')
            pos = s.end
        parts.append(html.escape(text[pos:]))
        state = "" if kept is None else ("kept" if i in kept else "pruned")
        tags = [f'<span class="tag {state}">{state}</span>'] if state else []
        tags.append(f'<span class="tag">AT2 #{at2_rank[i]}</span>')
        if retriever_rank is not None:
            tags.append(f'<span class="tag">retriever #{retriever_rank[i]}</span>')
        heading = f"<b>[{i + 1}]</b> {html.escape(source.title)}" if source.title else f"<b>[{i + 1}]</b>"
        passages.append(f'<div class="p {state}" id="{uid}-p{i}"><div class="ph">{heading}{"".join(tags)}</div>'
                        f'{"".join(parts)}</div>')

    n_unsupported = sum(not c.supported for c in cited.citations)
    meta = (f"attributor {html.escape(att.model)} · evidence {html.escape(cited.evidence)} · "
            f"{len(cited.citations) - n_unsupported} of {len(cited.citations)} sentences supported")
    heading = f'<div class="q">{html.escape(title or att.query)}</div>'
    return (f'<div class="at2v" id="{uid}"><style>{STYLE}</style>{heading}'
            f'<div class="ans"><h3>Answer</h3><p>{"".join(answer)}</p>'
            f'<div class="legend">source sentences: AT2 score <span>0</span><span class="bar"></span>'
            f'<span>max</span> · <span class="badge">unsupported</span> no passage supports it</div>'
            f'<div class="meta">{meta}</div></div>'
            f'<div class="srcs"><h3>Passages</h3>{"".join(passages)}</div>'
            f'<script>{SCRIPT % repr(uid)}</script></div>')


def page(fragments: Sequence[str], title: str = "at2-rag") -> str:
    """Join fragments into one standalone page."""
    body = "".join(f'<section style="margin:1.5rem 0 2.5rem">{f}</section>' for f in fragments)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"</head><body style='margin:0;padding:1rem;background:#fff'><h1 style='font:600 1.4rem system-ui;"
            f"max-width:1280px;margin:0 auto 1rem'>{html.escape(title)}</h1>{body}</body></html>")
