"""The letters protocol: parsing completions and exact-set scoring."""

import pytest

from pwd_agent.prompting import load_prompt, parse_letters, render_choice_prompt, score


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A", "A"), ("C,A", "A,C"), ("A, C", "A,C"), ("A C", "A,C"), ("Answer: A,C", "A,C"), ("answer - B", "B"),
        ("The answer is C", "C"), ("(B) and (D)", "B,D"), ("**B**.", "B"), ("Answers: B & D", "B,D"),
        ("A and C\nbecause the floc settles", "A,C"), ("\n\n D \n", "D"),
        # Anything else on the first line is no answer: a stray capital in prose is never read.
        ("B because D is wrong", ""), ("D) Right after A happens", ""), ("B. because the floc", ""),
        ("I think A", ""), ("Alum dissolves", ""), ("Answer: Alum", ""), ("AB", ""), ("a, c", ""),
        ("Answer:", ""), ("", ""), ("   ", ""),
    ],
)
def test_parse_letters_reads_only_the_answer_grammar(text, expected):
    assert parse_letters(text) == expected


def test_exact_set_match():
    assert score("A,C", "A,C")
    assert not score("A", "A,C")
    assert not score("A,B,C", "A,C")
    assert not score("", "A")


def test_choice_prompt_lists_options_and_asks_for_letters():
    text = render_choice_prompt("Which?", ["one", "two", "three", "four"])
    assert "A. one\nB. two\nC. three\nD. four" in text
    assert "Write only the letters." in text


def test_missing_variable_is_an_error():
    with pytest.raises(KeyError, match="options"):
        load_prompt("eval/letters").render(question="Q")
