"""One pass, two granularities: passage and sentence features captured together equal separate captures."""

import torch

from at2_rag import to_passages
from at2_rag.attention import FeatureCapture
from at2_rag.features import collect
from at2_rag.prompts import build_prompt

SOURCES = to_passages([("Paris", "Paris is the capital of France. It lies on the Seine. It is old."),
                      ("Rome", "Rome is in Italy. It has the Colosseum.")])


def _capture(lm, layout, spans, response_ids):
    capture = FeatureCapture.for_spans([spans], [0], len(layout), len(spans), lm.num_layers, lm.num_heads)
    lm.response_logprobs([layout.input_ids], [response_ids], capture)
    return capture.features()[0]


def test_one_pass_equals_two_passes(tiny_lm):
    job = collect(tiny_lm, ["Where is Paris?"], [SOURCES], ["Paris is in France. It is old."])[0]
    layout = build_prompt(tiny_lm.tokenizer, "Where is Paris?", SOURCES)
    passages = _capture(tiny_lm, layout, layout.token_spans, job.response_ids)
    sentences = _capture(tiny_lm, layout, layout.sentence_token_spans, job.response_ids)
    assert torch.allclose(job.passage_token_features, passages, atol=1e-6)
    assert torch.allclose(job.sentence_token_features, sentences, atol=1e-6)
    assert job.at_level("sentence").num_units == 5 and job.num_units == 2


def test_sentence_view_scores_and_ablates_sentences(tiny_lm):
    from at2_rag.ablation import ablated_prompt

    job = collect(tiny_lm, ["Where is Paris?"], [SOURCES], ["Paris."])[0].at_level("sentence")
    assert job.features.shape[1] == 5
    kept = tiny_lm.tokenizer.decode(ablated_prompt(job, [True, False, True, False, False]))
    assert "Seine" not in kept and "It is old." in kept and "Rome" not in kept


def test_sentence_level_training_collection(tiny_lm, tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from at2_rag.fit.theta import collect_examples

    example = SimpleNamespace(id="x", question="Where is Paris?", passages=SOURCES)
    paths = collect_examples(tiny_lm, [example], tmp_path, level="sentence", n_masks=4, max_new_tokens=4,
                             progress=False, responses=["Paris is in France."])
    data = np.load(paths[0])
    assert data["masks"].shape == (4, 5) and data["features"].shape[1:] == (5, 3 * 8)  # three feature families
    assert str(data["response"]) == "Paris is in France."
