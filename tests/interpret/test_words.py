"""Word pieces merged into words for display: WordPiece ``##``, SentencePiece ``▁``, byte-level ``Ġ``."""

from __future__ import annotations

import pytest

from sparsecbm.interpret.words import group_words, scheme_of_tokenizer, scheme_of_tokens, word_scores, words

SPECIAL = {"[CLS]", "[SEP]", "<s>", "</s>"}


@pytest.mark.parametrize("tokens,scheme,texts", [
    (["[CLS]", "the", "limo", "##nce", "##llo", "was", "lovely", ",", "[SEP]"], "wordpiece",
     ["[CLS]", "the", "limoncello", "was", "lovely", ",", "[SEP]"]),
    (["<s>", "▁The", "▁limon", "cello", "▁was", "▁lovely", ",", "</s>"], "sentencepiece",
     ["<s>", "The", "limoncello", "was", "lovely,", "</s>"]),
    (["<s>", "The", "Ġlimon", "cello", "Ġwas", "Ġlovely", ",", "</s>"], "bytelevel",
     ["<s>", "The", "limoncello", "was", "lovely,", "</s>"]),
])
def test_pieces_become_words(tokens, scheme, texts):
    assert scheme_of_tokens(tokens) == scheme
    got = words(tokens, special=SPECIAL)
    assert [w["text"] for w in got] == texts
    # every position in exactly one word, in order
    assert [i for w in got for i in w["tokens"]] == list(range(len(tokens)))


def test_a_special_token_ends_a_word_and_continuations_after_it_start_one():
    assert group_words(["[CLS]", "##x", "y", "##z", "[SEP]", "##w"], "wordpiece", SPECIAL) == [[0], [1], [2, 3], [4], [5]]
    with pytest.raises(ValueError, match="unknown word-piece scheme"):
        group_words(["a"], "bpe")


def test_word_scores_are_sums_and_keep_the_total():
    tokens = ["[CLS]", "limo", "##nce", "##llo", "[SEP]"]
    groups = group_words(tokens, special=SPECIAL)
    scores = [0.1, 0.2, 0.3, 0.15, 0.25]
    assert word_scores(scores, groups) == pytest.approx([0.1, 0.65, 0.25])
    assert sum(word_scores(scores, groups)) == pytest.approx(sum(scores))


def test_minilm_tokenizer_is_wordpiece_and_decodes_words(minilm_tokenizer):
    assert scheme_of_tokenizer(minilm_tokenizer) == "wordpiece"
    tokens = minilm_tokenizer.convert_ids_to_tokens(minilm_tokenizer("The limoncello was lovely")["input_ids"])
    assert "##nce" in tokens
    got = words(tokens, "wordpiece", set(minilm_tokenizer.all_special_tokens), minilm_tokenizer)
    assert [w["text"] for w in got] == ["[CLS]", "the", "limoncello", "was", "lovely", "[SEP]"]
