import pytest

from at2_rag import EmptyInputError, InvalidInputError, Passage, to_passages
from at2_rag.passages import sentence_spans
from at2_rag.prompts import build_prompt


def test_to_sources_accepts_strings_pairs_and_sources():
    passages = to_passages(["plain", ("Title", "titled"), Passage(id="x", text="obj", metadata={"k": 1})])
    assert [s.id for s in passages] == ["0", "1", "x"]
    assert passages[1].title == "Title" and passages[2].metadata == {"k": 1}


@pytest.mark.parametrize("bad", [[], ["ok", "   "], [""]])
def test_empty_sources_are_rejected(bad):
    with pytest.raises(EmptyInputError):
        to_passages(bad)


def test_non_text_source_is_a_type_error():
    with pytest.raises(TypeError):
        to_passages([42])


def test_sentence_split_unicode():
    text = "Zürich liegt am See. 東京は日本の首都です。 Is it? Yes!  Done"
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == ["Zürich liegt am See.", "東京は日本の首都です。", "Is it?", "Yes!", "Done"]


def test_sentence_split_keeps_initials_and_abbreviations():
    text = 'It was founded by Willis W. Harman in 1973. Dr. Smith ran it (see "Mt. Hood"). It grew.'
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "It was founded by Willis W. Harman in 1973.", 'Dr. Smith ran it (see "Mt. Hood").', "It grew."]


def test_sentence_split_keeps_initialisms_and_volume_numbers_but_ends_at_yes_no_answers():
    text = ("She signed with S.M. Entertainment. It is in Vol. 2. Governor J.B. Pritzker vetoed it on Oct. 3. "
            "It moved to the u.s. office. The answer is no. It opens at 9 a.m. Visitors queue.")
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "She signed with S.M. Entertainment.", "It is in Vol. 2.", "Governor J.B. Pritzker vetoed it on Oct. 3.",
        "It moved to the u.s. office.", "The answer is no.", "It opens at 9 a.m.", "Visitors queue."]


def test_caller_sentence_spans_are_checked():
    assert Passage(id="a", text="One. Two.", sentences=[(0, 4), (5, 9)]).sentence_spans() == [(0, 4), (5, 9)]
    with pytest.raises(ValueError):
        Passage(id="a", text="One. Two.", sentences=[(5, 9), (0, 4)])
    with pytest.raises(InvalidInputError):
        to_passages("One. Two.")


@pytest.mark.slow
def test_prompt_spans_cover_exactly_the_source_text(lm):
    passages = to_passages([("Ünïcode", "Ça va? Très bien — merci."), ("B", "Second passage 2 + 2 = 4.")])
    layout = build_prompt(lm.tokenizer, "Who?", passages)
    for (a, b), (ta, tb), source in zip(layout.char_spans, layout.token_spans, passages):
        assert layout.text[a:b].endswith(source.text) and source.title in layout.text[a:b]
        assert source.text in lm.tokenizer.decode(layout.input_ids[ta:tb])
    assert [layout.text[a:b] for a, b in layout.sentence_char_spans] == [
        "Ça va?", "Très bien — merci.", "Second passage 2 + 2 = 4."]
    dropped = build_prompt(lm.tokenizer, "Who?", passages, keep_sentences={0, 2})
    assert "Très bien" not in dropped.text and "Ça va?" in dropped.text and dropped.sentence_indices == [0, 2]
    assert build_prompt(lm.tokenizer, "Who?", passages, keep_sentences={2}).source_indices == [1]
