"""Prompt assembly: render (query, sources) with the chat template and record each source's char and token span."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from .errors import EmptyInputError
from .sources import Source


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
            "\n\nQuestion: Who commanded the mission that landed on the Moon in 1969?\nAnswer with only the short answer.",
            "Neil Armstrong",
        ),
    ]


@dataclass(frozen=True)
class PromptLayout:
    """A rendered prompt: its text, token ids, and where each kept source sits in both."""

    text: str
    input_ids: list[int]
    source_indices: list[int]
    char_spans: list[tuple[int, int]]
    token_spans: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.input_ids)


def _render_context(sources: Sequence[Source], keep: Sequence[int], template: PromptTemplate) -> tuple[str, list]:
    """Context text and the char span of each kept source; sentence sources of one parent share one header."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    n = 0
    previous_parent = object()
    for index in keep:
        source = sources[index]
        parent = source.metadata.get("parent_id", object())
        if parent == previous_parent:
            lead, header = "", " "
        else:
            n += 1
            lead = template.separator if parts else ""
            header = template.header.format(n=n, title=source.title or "").replace(" \n", "\n")
        previous_parent = parent
        block_start = pos + len(lead)
        parts.append(lead + header + source.text)
        text_start = block_start + len(header)
        pos = text_start + len(source.text)
        spans.append((text_start if "parent_id" in source.metadata else block_start, pos))
    return "".join(parts), spans


def _token_spans(offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Map char spans to token spans with the tokenizer's offset mapping (tokens that overlap the span)."""
    result = []
    for start, end in char_spans:
        first = next(i for i, (a, b) in enumerate(offsets) if b > start)
        last = max(i for i, (a, b) in enumerate(offsets) if a < end)
        result.append((first, last + 1))
    return result


def render_chat(tokenizer, template: PromptTemplate, user: str) -> tuple[str, int]:
    """Full prompt text (system, demonstration turns, then ``user``) and the char offset where ``user`` starts."""
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
    offset = shell.index(marker)
    return shell.replace(marker, user), offset


def build_prompt(
    tokenizer,
    query: str,
    sources: Sequence[Source],
    keep: Sequence[int] | None = None,
    template: PromptTemplate | None = None,
) -> PromptLayout:
    """Render the prompt with the sources in ``keep`` (all by default, in order) and locate them in tokens."""
    if not query or not query.strip():
        raise EmptyInputError("the query is empty")
    template = template or PromptTemplate()
    keep = list(range(len(sources))) if keep is None else list(keep)
    context, spans = _render_context(sources, keep, template)
    user = (context + template.separator if context else "") + template.instruction.format(query=query.strip())
    text, offset = render_chat(tokenizer, template, user)
    char_spans = [(a + offset, b + offset) for a, b in spans]
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    token_spans = _token_spans(encoding["offset_mapping"], char_spans)
    return PromptLayout(text, list(encoding["input_ids"]), keep, char_spans, token_spans)
