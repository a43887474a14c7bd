import pytest

from at2_rag.eval.metrics import contains_answer, exact_match, token_f1
from at2_rag.prune import select


def test_answer_metrics():
    assert exact_match("The Philadelphia Eagles.", "Philadelphia Eagles") == 1.0
    assert token_f1("Eagles of Philadelphia", "Philadelphia Eagles") == pytest.approx(0.8)
    assert token_f1("", "x") == 0.0
    assert contains_answer("It was the Philadelphia Eagles, in 2009", "philadelphia eagles") == 1.0
    assert contains_answer("Eaglesfield", "Eagles") == 0.0


def test_select_policies():
    scores = [0.1, 0.5, -0.2, 0.4]
    assert select(scores, top_n=2) == [1, 3]
    assert select(scores, threshold=0.3) == [1, 3]
    assert select(scores, threshold=9.0) == [1]
    assert select(scores, max_tokens=10, token_counts=[5, 6, 1, 5]) == [1, 2]
    with pytest.raises(ValueError):
        select(scores, top_n=0)
