"""Prompt assembly: render (query, passages) with the chat template and locate every source, and every
sentence inside it, in characters and tokens.

Sources nest: each passage is split into sentences, and the layout records both levels, so one forward
pass yields passage and sentence features. An ablation can remove whole passages or single sentences.
User text (query, titles, passages) is tokenized as plain text: a retrieved document that contains
``<|im_end|>`` reads those characters, it cannot close the user turn.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from .passages import Passage


class PromptTemplate(BaseModel):
    """Wording of the RAG prompt. Kept fixed across every method that is compared."""

    system: str = (
        "You answer questions using the documents provided. "
        "Reply with only the short answer (a name, date, number or phrase), no explanation."
    )
    instruction: str = "Question: {query}\nAnswer with only the short answer."
    header: str = "Document [{n}] {title}\n"
    separator: str = "\n\n"
    examples: list[tuple[str, str]] = [
        (
            "Document [1] Eiffel Tower\nThe Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889."
            "\n\nQuestion: In which city is the Eiffel Tower?\nAnswer with only the short answer.",
            "Paris",
        ),
        (
            "Document [1] Apollo 11\nApollo 11 landed on the Moon on July 20, 1969, commanded by Neil Armstrong."
            "\n\nQuestion: Who commanded the mission that landed on the Moon in 1969?"
            "\nAnswer with only the short answer.",
            "Neil Armstrong",
        ),
    ]


def passage_sentences(passages: Sequence[Passage]) -> list[tuple[int, int, int]]:
    """Every sentence of every source, flattened in order: ``(source index, char start, char end)`` in its text."""
    return [(i, a, b) for i, source in enumerate(passages) for a, b in source.sentence_spans()]


@dataclass(frozen=True)
class PromptLayout:
    """A rendered prompt: its text, token ids, and where each kept source and sentence sits in both.

    ``source_indices[k]`` is the source index of the k-th kept passage, ``sentence_indices[k]`` the flat
    sentence index (into ``passage_sentences``) of the k-th kept sentence. Passage spans include the
    document header (title); sentence spans cover the sentence text only.
    """

    text: str
    input_ids: list[int]
    source_indices: list[int]
    char_spans: list[tuple[int, int]]
    token_spans: list[tuple[int, int]]
    sentence_indices: list[int]
    sentence_char_spans: list[tuple[int, int]]
    sentence_token_spans: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.input_ids)

    def spans(self, level: str) -> tuple[list[int], list[tuple[int, int]]]:
        """(unit indices, token spans) of the kept units at ``level`` ('passage' or 'sentence')."""
        if level == "sentence":
            return self.sentence_indices, self.sentence_token_spans
        return self.source_indices, self.token_spans


def _render_source(text: str, sentences: list[tuple[int, int, int]], kept: Collection[int]) -> tuple[str, list]:
    """The source's text with dropped sentences cut out (exactly the text when all are kept), and the
    (flat index, start, end) of each kept sentence in the rendered text."""
    parts: list[str] = []
    spans = []
    pos = 0
    previous = None
    for local, (flat, a, b) in enumerate(sentences):
        if flat not in kept:
            continue
        if previous is None:
            lead = text[:a] if local == 0 else ""
        else:
            lead = text[sentences[previous][2] : sentences[previous + 1][1]] if previous + 1 == local else " "
        start = pos + len(lead)
        parts.append(lead + text[a:b])
        pos = start + (b - a)
        spans.append((flat, start, pos))
        previous = local
    if previous is not None and previous == len(sentences) - 1:
        parts.append(text[sentences[previous][2] :])
    return "".join(parts), spans


def _render_context(passages: Sequence[Passage], keep: Sequence[int], kept_sentences: Collection[int] | None,
                    template: PromptTemplate) -> tuple[str, list[int], list, list[int], list]:
    """Context text; kept source indices with char spans (header included); kept sentences with char spans."""
    by_source: dict[int, list[tuple[int, int, int]]] = {}
    for flat, (i, a, b) in enumerate(passage_sentences(passages)):
        by_source.setdefault(i, []).append((flat, a, b))
    parts: list[str] = []
    pos = 0
    kept_sources, spans, kept_sent, sent_spans = [], [], [], []
    for index in keep:
        sentences = by_source[index]
        chosen = {flat for flat, _, _ in sentences} if kept_sentences is None else kept_sentences
        body, inner = _render_source(passages[index].text, sentences, chosen)
        if not inner:
            continue
        lead = template.separator if parts else ""
        header = template.header.format(n=len(kept_sources) + 1, title=passages[index].title or "").replace(" \n", "\n")
        block_start = pos + len(lead)
        text_start = block_start + len(header)
        parts.append(lead + header + body)
        pos = text_start + len(body)
        kept_sources.append(index)
        spans.append((block_start, pos))
        for flat, a, b in inner:
            kept_sent.append(flat)
            sent_spans.append((text_start + a, text_start + b))
    return "".join(parts), kept_sources, spans, kept_sent, sent_spans


def _token_spans(offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Map char spans to token spans with the tokenizer's offset mapping (tokens that overlap the span)."""
    bounds = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    spans = np.asarray(char_spans, dtype=np.int64).reshape(-1, 2)
    result = []
    step = max(1, 2**22 // max(1, len(bounds)))  # spans per block: at most 4M comparisons held at once
    for block in (spans[i : i + step] for i in range(0, len(spans), step)):
        after_start = bounds[None, :, 1] > block[:, None, 0]  # [spans, tokens]: the token ends after the start
        before_end = bounds[None, :, 0] < block[:, None, 1]  # the token starts before the span ends
        if not (after_start.any(1) & before_end.any(1)).all():
            raise ValueError("a character span lies outside the tokenized text")
        first = after_start.argmax(1)
        last = len(bounds) - 1 - before_end[:, ::-1].argmax(1)
        result += [(int(a), int(b) + 1) for a, b in zip(first, last)]
    return result


def _shell(tokenizer, template: PromptTemplate) -> tuple[str, str]:
    """The prompt around the user's message: (text before it, text after it), rendered by the chat template."""
    marker = "\u2063AT2_USER_CONTENT\u2063"
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": template.system}]
        for question, answer in template.examples:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": marker})
        shell = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        shots = "".join(f"{q}\nAnswer: {a}\n\n" for q, a in template.examples)
        shell = f"{template.system}\n\n{shots}{marker}\nAnswer:"
    before, after = shell.split(marker)
    return before, after


def encode_plain(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and char offsets of ``text`` read as plain text: special-token strings are not parsed."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    return list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]


def encode_chat(tokenizer, template: PromptTemplate, user: str) -> tuple[str, list[int], list[tuple[int, int]], int]:
    """Full prompt (template's own markers as control tokens, ``user`` as plain text): text, ids, char
    offsets, and the char offset where ``user`` starts."""
    before, after = _shell(tokenizer, template)
    head = tokenizer(before, add_special_tokens=False, return_offsets_mapping=True)
    body, body_offsets = encode_plain(tokenizer, user)
    tail = tokenizer(after, add_special_tokens=False, return_offsets_mapping=True)
    shift, end = len(before), len(before) + len(user)
    offsets = ([tuple(o) for o in head["offset_mapping"]] + [(a + shift, b + shift) for a, b in body_offsets]
               + [(a + end, b + end) for a, b in tail["offset_mapping"]])
    return before + user + after, list(head["input_ids"]) + body + list(tail["input_ids"]), offsets, shift


def build_prompt(
    tokenizer,
    query: str,
    passages: Sequence[Passage],
    keep: Sequence[int] | None = None,
    template: PromptTemplate | None = None,
    keep_sentences: Collection[int] | None = None,
) -> PromptLayout:
    """Render the prompt with the passages in ``keep`` (all by default, in order) and, within them, the
    sentences in ``keep_sentences`` (flat indices of ``passage_sentences``; all by default)."""
    template = template or PromptTemplate()
    keep = list(range(len(passages))) if keep is None else list(keep)
    context, kept, spans, kept_sent, sent_spans = _render_context(passages, keep, keep_sentences, template)
    user = (context + template.separator if context else "") + template.instruction.format(query=query.strip())
    text, ids, offsets, shift = encode_chat(tokenizer, template, user)
    char_spans = [(a + shift, b + shift) for a, b in spans]
    sentence_char_spans = [(a + shift, b + shift) for a, b in sent_spans]
    return PromptLayout(text, ids, kept, char_spans, _token_spans(offsets, char_spans), kept_sent,
                        sentence_char_spans, _token_spans(offsets, sentence_char_spans))


def render_chat(tokenizer, template: PromptTemplate, user: str) -> list[int]:
    """Token ids of the full prompt for one user message (plain-text user content)."""
    return encode_chat(tokenizer, template, user)[1]
