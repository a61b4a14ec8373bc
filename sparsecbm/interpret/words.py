"""Word pieces back into words, for showing token scores to people (``limo ##nce ##llo`` -> ``limoncello``).

Three sub-word conventions cover the tokenizers sparsecbm loads:

- ``wordpiece`` (BERT, MiniLM): a piece that continues a word starts with ``##``;
- ``sentencepiece`` (T5, Llama, XLM-R): a piece that starts a word starts with ``▁``;
- ``bytelevel`` (GPT-2, RoBERTa, Qwen, SmolLM): a piece that starts a word after a space starts with ``Ġ``.

Special tokens (``[CLS]``, ``<s>``, ...) are words of their own. A word's score is the **sum** of its pieces'
scores: the attention mass a concept puts on the word, and for integrated gradients the total attribution
(the sum keeps their completeness: word scores add up to the same total as the token scores).

Example:
    >>> group_words(["[CLS]", "limo", "##nce", "##llo", "!", "[SEP]"], special={"[CLS]", "[SEP]"})
    [[0], [1, 2, 3], [4], [5]]
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

SCHEMES = ("wordpiece", "sentencepiece", "bytelevel")
_STARTS = {"sentencepiece": "▁", "bytelevel": "Ġ"}


def scheme_of_tokens(tokens: Sequence[str]) -> str:
    """The convention the pieces ``tokens`` follow (by their markers; ``wordpiece`` when none shows)."""
    if any(t.startswith("▁") for t in tokens):
        return "sentencepiece"
    if any(t.startswith("Ġ") for t in tokens):
        return "bytelevel"
    return "wordpiece"


def scheme_of_tokenizer(tokenizer) -> str:
    """The convention of ``tokenizer``: the marker most of its vocabulary carries."""
    counts = dict.fromkeys(SCHEMES, 0)
    for piece in tokenizer.get_vocab():
        if piece.startswith("##"):
            counts["wordpiece"] += 1
        elif piece.startswith("▁"):
            counts["sentencepiece"] += 1
        elif piece.startswith("Ġ"):
            counts["bytelevel"] += 1
    return max(SCHEMES, key=lambda s: counts[s])


def group_words(tokens: Sequence[str], scheme: str | None = None, special: Collection[str] = ()) -> list[list[int]]:
    """Token positions grouped into words, in order (every position in exactly one group).

    Args:
        tokens: The pieces as the tokenizer spells them.
        scheme: ``wordpiece`` | ``sentencepiece`` | ``bytelevel`` (``None``: read from the markers).
        special: Special tokens: each is a word of its own, and the next piece starts a new word.
    """
    scheme = scheme or scheme_of_tokens(tokens)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown word-piece scheme {scheme!r}; expected one of {SCHEMES}")
    groups: list[list[int]] = []
    open_word = False  # whether the last group can be continued
    for i, tok in enumerate(tokens):
        if tok in special:
            groups.append([i])
            open_word = False
            continue
        if scheme == "wordpiece":
            starts = not tok.startswith("##")
        else:  # a piece without the marker continues the word before it (the text's first word has none)
            starts = tok.startswith(_STARTS[scheme])
        if open_word and not starts:
            groups[-1].append(i)
        else:
            groups.append([i])
        open_word = True
    return groups


def word_text(pieces: Sequence[str], scheme: str, tokenizer=None) -> str:
    """The word the ``pieces`` spell (the tokenizer's own ``convert_tokens_to_string`` when given, which also
    decodes byte-level characters)."""
    if tokenizer is not None:
        return tokenizer.convert_tokens_to_string(list(pieces)).strip() or "".join(pieces)
    if scheme == "wordpiece":
        return "".join(p[2:] if i and p.startswith("##") else p for i, p in enumerate(pieces))
    marker = _STARTS[scheme]
    return "".join(pieces).replace(marker, " ").strip() or "".join(pieces)


def words(tokens: Sequence[str], scheme: str | None = None, special: Collection[str] = (),
          tokenizer=None) -> list[dict]:
    """``[{"text": word, "tokens": [positions]}]`` for ``tokens`` (see :func:`group_words`)."""
    scheme = scheme or scheme_of_tokens(tokens)
    out = []
    for group in group_words(tokens, scheme, special):
        pieces = [tokens[i] for i in group]
        text = pieces[0] if pieces[0] in special else word_text(pieces, scheme, tokenizer)
        out.append({"text": text, "tokens": group})
    return out


def word_scores(scores: Sequence[float], groups: Sequence[Sequence[int]]) -> list[float]:
    """Per word, the sum of its pieces' scores."""
    return [float(sum(scores[i] for i in g)) for g in groups]
