"""Attributing a character range of the response (a phrase, a claim): the scores come from the rows that
predict exactly the tokens overlapping it, in the same pass as the sentence targets."""

import numpy as np
import pytest
import torch

from at2_rag import InvalidInputError
from at2_rag.prompts import encode_plain

RESPONSE = "Kykuit has 40 rooms. It was built for John D. Rockefeller."


def test_a_sentence_range_equals_that_sentence(tiny_attributor, kykuit):
    whole = tiny_attributor.attribute(kykuit.query, kykuit.passages, RESPONSE)
    second = whole.targets[1]
    alone = tiny_attributor.attribute(kykuit.query, kykuit.passages, RESPONSE, span=(second.start, second.end))
    assert [(t.text, t.start, t.end) for t in alone.targets] == [(second.text, second.start, second.end)]
    assert np.allclose(alone.targets[0].scores, second.scores, atol=1e-6)
    assert np.allclose(alone.targets[0].sentence_scores, second.sentence_scores, atol=1e-6)


def test_a_phrase_is_scored_from_the_tokens_that_overlap_it(tiny_attributor, kykuit):
    start = RESPONSE.index("John D.")
    span = (start, start + len("John D. Rockefeller"))
    result = tiny_attributor.attribute(kykuit.query, kykuit.passages, RESPONSE, span=span)
    assert result.targets[0].text == "John D. Rockefeller"
    _, offsets = encode_plain(tiny_attributor.lm.tokenizer, RESPONSE)
    rows = [t for t, (a, b) in enumerate(offsets) if a < span[1] and b > span[0]]  # independent of the library
    job = tiny_attributor.pipeline.jobs([kykuit.query], [kykuit.passages], [RESPONSE])[0]
    expected = job.passage_token_features[rows[0] : rows[-1] + 1].mean(0).mean(-1)  # average attention
    assert torch.allclose(torch.tensor(result.targets[0].scores, dtype=torch.float32), expected, atol=1e-6)
    whole = tiny_attributor.attribute(kykuit.query, kykuit.passages, RESPONSE)
    assert not np.allclose(result.targets[0].scores, whole.targets[1].scores)  # not its whole sentence's


def test_cite_a_selected_phrase(tiny_attributor, kykuit):
    start = RESPONSE.index("40 rooms")
    cited = tiny_attributor.cite(kykuit.query, kykuit.passages, RESPONSE, span=(start, start + 8))
    assert [(c.sentence, c.start) for c in cited.citations] == [("40 rooms", start)]


@pytest.mark.parametrize("span", [(5, 3), (0, len(RESPONSE) + 1), (-1, 4), (20, 21), (0.0, 4), "0:4", (1, 2, 3)])
def test_bad_ranges_are_refused_before_model_work(tiny_attributor, kykuit, span, monkeypatch):
    monkeypatch.setattr(tiny_attributor.pipeline, "jobs", lambda *a, **k: pytest.fail("the model ran"))
    with pytest.raises(InvalidInputError):
        tiny_attributor.attribute(kykuit.query, kykuit.passages, RESPONSE, span=span)


def test_a_range_past_a_generated_answer_is_refused(tiny_attributor, kykuit):
    with pytest.raises(InvalidInputError, match="inside the response"):
        tiny_attributor.attribute(kykuit.query, kykuit.passages, span=(0, 10_000))


def test_one_range_per_item_in_a_batch(tiny_attributor, kykuit):
    with pytest.raises(InvalidInputError, match="one \\(or None\\) each"):
        tiny_attributor.attribute_batch([kykuit.query], [kykuit.passages], [RESPONSE], spans=[None, (0, 4)])
    results = tiny_attributor.attribute_batch([kykuit.query] * 2, [kykuit.passages] * 2, [RESPONSE] * 2,
                                              spans=[None, (0, 6)])
    assert len(results[0].targets) == 2 and [t.text for t in results[1].targets] == ["Kykuit"]


def test_the_old_keyword_names_warn_and_still_work(tiny_attributor, kykuit):
    with pytest.warns(DeprecationWarning, match="use span="):
        old = tiny_attributor.attribute(kykuit.query, kykuit.passages, RESPONSE, target=(0, 6))
    assert [t.text for t in old.targets] == ["Kykuit"]
    with pytest.warns(DeprecationWarning, match="use passages="):
        tiny_attributor.attribute(kykuit.query, sources=kykuit.passages, response=RESPONSE)
    with pytest.warns(DeprecationWarning, match="use max_passages="):
        cited = tiny_attributor.cite(kykuit.query, kykuit.passages, RESPONSE, max_sources=1)
    assert all(len(c.passages) <= 1 for c in cited.citations)
    with pytest.warns(DeprecationWarning, match="use top_n="):
        assert len(tiny_attributor.prune(kykuit.query, kykuit.passages, RESPONSE, top_k=1).indices) == 1
    with pytest.warns(DeprecationWarning, match="evidence_model"):
        assert cited.evidence == cited.evidence_model
    with pytest.raises(InvalidInputError, match="not both"):
        tiny_attributor.attribute(kykuit.query, kykuit.passages, RESPONSE, target=(0, 6), span=(0, 6))
