"""Attribute an answer written by any LLM (here: a hand-written one) to its passages, with the local model.

    python examples/cite_any_llm.py
"""

from at2_rag import AT2Attributor

SOURCES = [
    ("Kykuit", "Kykuit is a 40-room historic house museum in Pocantico Hills, New York, built for John D. Rockefeller."),
    ("Union Church", "Union Church of Pocantico Hills was built by John D. Rockefeller, Jr. in 1921."),
    ("Stone Barns", "Stone Barns Center for Food & Agriculture is a non-profit farm in Pocantico Hills."),
]
ANSWER = "Kykuit has 40 rooms. It was built for John D. Rockefeller. It has a heliport."  # e.g. from an API model


def main() -> None:
    attributor = AT2Attributor.from_pretrained()
    cited = attributor.cite("How many rooms does the Rockefeller house above Pocantico Hills have?", SOURCES,
                            response=ANSWER)
    print(cited.formatted)
    for citation in cited.citations:
        print(f"- {citation.sentence!r}  supported={citation.supported} (support {citation.support:.2f})")
        for source in citation.passages:
            print(f"    [{source.index + 1}] {source.id}: {source.quote!r}")
    print(f"evidence: {cited.evidence}; AT2 scorers: {cited.attribution.scorer} / {cited.attribution.sentence_scorer}")


if __name__ == "__main__":
    main()
