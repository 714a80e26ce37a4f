"""corpus_bleu and tokenize_13a: hand-computed cases, and sacrebleu where it is installed."""

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scratchlm.metrics import BLEUScore, corpus_bleu, tokenize_13a

# --- hand-computed cases (no sacrebleu needed) -----------------------------------

# hyp "the cat sat on the mat" against ref "the cat sat on a mat", both 6 tokens:
#   1-grams 5/6 (the second "the" is clipped), 2-grams 3/5 (the cat, cat sat, sat on),
#   3-grams 2/4 (the cat sat, cat sat on), 4-grams 1/3 (the cat sat on); BP = 1.
CAT_HYP, CAT_REF = "the cat sat on the mat", "the cat sat on a mat"


@pytest.mark.parametrize("smooth_method", ["exp", "floor", "none"])
def test_bleu_by_hand_without_zero_counts(smooth_method):
    result = corpus_bleu([CAT_HYP], [CAT_REF], smooth_method=smooth_method)
    assert result.counts == [5, 3, 2, 1] and result.totals == [6, 5, 4, 3]
    assert result.sys_len == result.ref_len == 6 and result.bp == 1.0
    assert result.precisions == pytest.approx([500 / 6, 60, 50, 100 / 3], rel=1e-12)
    # geometric mean of 5/6, 3/5, 2/4, 1/3 = (1/12)^(1/4)
    assert result.score == pytest.approx(100 * (1 / 12) ** 0.25, rel=1e-12)
    assert float(result) == result.score


def test_bleu_add_k_by_hand():
    # k = 1 added to the matches and totals of orders 2..4: 5/6, 4/6, 3/5, 2/4
    result = corpus_bleu([CAT_HYP], [CAT_REF], smooth_method="add-k")
    assert result.counts == [5, 3, 2, 1]                       # reported before smoothing
    assert result.score == pytest.approx(100 * (5 / 6 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25,
                                         rel=1e-12)


def test_identical_corpus_scores_100():
    corpus = ["A man, a plan, a canal: Panama!", "It costs $1,000.50 - or 5-10 euros.",
              "Grüße aus Köln", "one two three four"]
    result = corpus_bleu(corpus, corpus)
    assert result.score == pytest.approx(100.0, abs=1e-12)
    assert result.bp == 1.0 and result.counts == result.totals


def test_no_overlap_is_zero():
    for method in ("none", "exp", "floor", "add-k"):
        assert corpus_bleu(["a b c d e"], ["v w x y z"], smooth_method=method).score == 0.0


def test_zero_higher_order_counts_by_smoothing():
    # hyp "a b c d", ref "a b x d y": 1-grams 3/4, 2-grams 1/3 (a b), 3-grams 0/2, 4-grams 0/1
    # c = 4 < r = 5: BP = exp(1 - 5/4)
    hyp, ref = ["a b c d"], ["a b x d y"]
    bp = math.exp(1 - 5 / 4)
    # exp: the j-th order without a match gets 100 / (2^j t_n): 100/(2*2), 100/(4*1)
    expected = {"exp": [75, 100 / 3, 25, 25],
                "floor": [75, 100 / 3, 100 * 0.1 / 2, 100 * 0.1 / 1],
                "add-k": [75, 100 * 2 / 4, 100 * 1 / 3, 100 * 1 / 2]}
    for method, precisions in expected.items():
        result = corpus_bleu(hyp, ref, smooth_method=method)
        assert result.precisions == pytest.approx(precisions, rel=1e-12), method
        assert result.bp == pytest.approx(bp, rel=1e-15)
        geometric = math.exp(sum(math.log(p) for p in precisions) / 4)
        assert result.score == pytest.approx(bp * geometric, rel=1e-12), method
    assert corpus_bleu(hyp, ref, smooth_method="none").score == 0.0
    assert corpus_bleu(hyp, ref, smooth_method="floor", smooth_value=0.5).precisions[3] == 50.0


def test_brevity_penalty_formula():
    # every n-gram of "the cat sat on" matches; c = 4, r = 6: BLEU = 100 exp(1 - 6/4)
    result = corpus_bleu(["the cat sat on"], ["the cat sat on the mat"])
    assert result.precisions == [100.0] * 4
    assert result.bp == pytest.approx(math.exp(-0.5), rel=1e-15)
    assert result.score == pytest.approx(100 * math.exp(-0.5), rel=1e-12)
    # longer than the reference: no penalty; an empty hypothesis: BP = 0
    assert corpus_bleu(["the cat sat on the mat again"], ["the cat sat on the mat"]).bp == 1.0
    assert corpus_bleu([""], ["a b"]).bp == 0.0


def test_brevity_penalty_uses_the_closest_reference():
    hyp = ["the cat sat on"]                                    # 4 tokens
    # references of 2 and 5 tokens: the closest is 5, so c = 4 < r = 5
    result = corpus_bleu(hyp, [["the cat"], ["the cat sat on it"]])
    assert result.ref_len == 5 and result.bp == pytest.approx(math.exp(1 - 5 / 4), rel=1e-15)
    # 2 and 6 tokens are equally close (|4 - 2| = |4 - 6|): the shorter wins, no penalty
    result = corpus_bleu(hyp, [["the cat sat on the mat"], ["the cat"]])
    assert result.ref_len == 2 and result.bp == 1.0
    # lengths add up over the corpus, each segment choosing its own reference
    # (3 tokens: 4 beats 1; 6 tokens: 7 beats 2)
    result = corpus_bleu(["a b c", "a b c d e f"], [["a b c d", "a b"], ["a", "a b c d e f g"]])
    assert result.sys_len == 9 and result.ref_len == 4 + 7


def test_clipping_takes_the_most_in_any_one_reference():
    # "the" occurs twice in the hypothesis, once in each reference: clipped to 1, not 2
    result = corpus_bleu(["the the"], [["the a"], ["a the"]], max_ngram_order=1)
    assert result.counts == [1] and result.totals == [2]
    result = corpus_bleu(["the the"], [["the a"], ["the the"]], max_ngram_order=1)
    assert result.counts == [2]


def test_tokenize_13a_rules_by_hand():
    assert tokenize_13a("Hello, world!") == ["Hello", ",", "world", "!"]
    # numbers keep their separators; a period or comma next to a non-digit splits off
    assert tokenize_13a("It costs 1,000.50 dollars.") == ["It", "costs", "1,000.50",
                                                          "dollars", "."]
    assert tokenize_13a("3.14, 2,5") == ["3.14", ",", "2,5"]
    # a dash splits only after a digit; the apostrophe never splits
    assert tokenize_13a("state-of-the-art 5-10 don't") == [
        "state-of-the-art", "5", "-", "10", "don't"]
    assert tokenize_13a("a -5") == ["a", "-5"]
    # SGML escapes are undone, then their characters split off
    assert tokenize_13a("&quot;Tom &amp; Jerry&quot; &lt;b&gt;") == [
        '"', "Tom", "&", "Jerry", '"', "<", "b", ">"]
    assert tokenize_13a("&amp;lt;") == ["<"]         # &amp; is undone before &lt; and &gt;
    assert tokenize_13a("&amp;gt;") == [">"]
    assert tokenize_13a("&amp;quot;") == ["&", "quot", ";"]   # ... but after &quot;
    # <skipped> vanishes; a word hyphenated across lines is joined; line breaks are spaces
    assert tokenize_13a("a <skipped> b") == ["a", "b"]
    assert tokenize_13a("e-\nmail\nnext") == ["email", "next"]
    # every other ASCII punctuation mark stands alone; non-ASCII letters are letters
    assert tokenize_13a("(x)[y]{z}@#$%^*+=/\\|~`_") == list("(x)[y]{z}@#$%^*+=/\\|~`_")
    assert tokenize_13a("Grüße, Zoë.") == ["Grüße", ",", "Zoë", "."]
    # a leading period before a digit: the padding space counts as the non-digit before it
    assert tokenize_13a(".5") == [".", "5"]


def test_tokenize_and_lowercase_options():
    # "none" splits on white space only: "cat." and "cat" differ
    assert corpus_bleu(["the cat."], ["the cat ."], tokenize="none").counts[0] == 1
    assert corpus_bleu(["the cat."], ["the cat ."]).counts[0] == 3
    assert corpus_bleu(["The Cat"], ["the cat"]).counts[0] == 0
    assert corpus_bleu(["The Cat"], ["the cat"], lowercase=True).counts[0] == 2
    # trailing white space goes before tokenising: "mail-\n" is "mail-", not "mail"
    assert corpus_bleu(["mail-\n"], ["mail-"]).counts[0] == 1


def test_empty_corpus_and_errors():
    for refs in ([], [[]]):
        result = corpus_bleu([], refs)
        assert isinstance(result, BLEUScore) and result.score == 0.0 and float(result) == 0.0
    with pytest.raises(ValueError, match="references stream 0 has 1 segments but hypotheses "
                                         "has 2"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="references stream 1 has 1"):
        corpus_bleu(["a", "b"], [["a", "b"], ["a"]])
    with pytest.raises(ValueError, match="references is empty"):
        corpus_bleu(["a"], [])
    with pytest.raises(ValueError, match="hypothesis 0 has no reference"):
        corpus_bleu(["a"], [[None], [None]])
    with pytest.raises(TypeError, match=r"hypotheses\[1\]"):
        corpus_bleu(["a", None], ["a", "b"])
    with pytest.raises(TypeError, match="one string"):
        corpus_bleu("a", "a")
    with pytest.raises(ValueError, match="smooth_method"):
        corpus_bleu(["a"], ["a"], smooth_method="add-one")
    with pytest.raises(ValueError, match="tokenize"):
        corpus_bleu(["a"], ["a"], tokenize="intl")


# --- against sacrebleu ------------------------------------------------------------

WORDS = ["the", "The", "cat", "sat", "on", "mat", "a", "über", "Grüße", "naïve", "東京",
         "don't", "state-of-the-art", "e-mail", "1,000", "3.14", "1,000.5", "42", "5-10",
         "-", "--", "—", ",", ".", "...", "!", "?", ";", ":", '"', "'", "(", ")", "&quot;",
         "&amp;", "&lt;", "&gt;", "&", "<skipped>", "$5", "50%", "U.S.", "etc.", "x,y",
         "a.b", "1.", ".5", ",5", "5,", "9-", "-9", "@user", "#tag", "{x}", "[1]", "`a`"]
SEPARATORS = [" ", " ", " ", "", "  ", "\t", "\n", "-\n", "\u00a0", "\u2009"]


@st.composite
def segments(draw, min_words=0, max_words=12):
    """One segment: words glued by spaces, nothing, tabs, line breaks or odd white space."""
    words = draw(st.lists(st.sampled_from(WORDS), min_size=min_words, max_size=max_words))
    text = ""
    for w in words:
        text += w + draw(st.sampled_from(SEPARATORS))
    return text


@st.composite
def corpora(draw):
    """hypotheses and 1-3 reference streams; references are noisy copies of the hypothesis
    (so that some n-grams match, and some orders match none), with different lengths, and
    now and then a None or an empty hypothesis."""
    # half the corpora are one or two segments whose references share words but seldom
    # longer n-grams, so that the higher orders often match nothing and smoothing decides
    hard = draw(st.booleans())
    n = draw(st.integers(1, 2 if hard else 6))
    kinds = ["shuffle", "fresh"] if hard else ["copy", "drop", "add", "shuffle", "fresh", "none"]
    hyps = [draw(st.sampled_from([segments(min_words=1)] * 7 + [st.just("")])) for _ in range(n)]
    hyps = [draw(h) for h in hyps]
    streams = []
    for k in range(draw(st.integers(1, 3))):
        stream = []
        for i in range(n):
            words = hyps[i].split(" ")
            kind = draw(st.sampled_from(kinds))
            if kind == "copy":
                ref = hyps[i]
            elif kind == "drop":
                keep = draw(st.lists(st.booleans(), min_size=len(words), max_size=len(words)))
                ref = " ".join(w for w, kp in zip(words, keep) if kp)
            elif kind == "shuffle":               # the same words, few longer n-grams
                ref = " ".join(draw(st.permutations(words)))
            elif kind == "add":
                ref = hyps[i] + " " + draw(segments(max_words=6))
            elif kind == "none" and k > 0:
                ref = None                      # stream 0 always has a reference
            else:
                ref = draw(segments())
            stream.append(ref)
        streams.append(stream)
    return hyps, streams


def _assert_same(ours, theirs, *, counts=True):
    assert math.isclose(ours.score, theirs.score, rel_tol=0, abs_tol=1e-9), (ours, theirs)
    assert ours.bp == pytest.approx(theirs.bp, rel=1e-12, abs=1e-15)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    assert ours.precisions == pytest.approx(theirs.precisions, rel=1e-12, abs=1e-12)
    if counts:
        assert (ours.counts, ours.totals) == (list(theirs.counts), list(theirs.totals))


@pytest.fixture(scope="module")
def sacrebleu():
    """sacrebleu, the reference implementation; the test is skipped where it is missing."""
    module = pytest.importorskip("sacrebleu")
    pytest.importorskip("sacrebleu.tokenizers.tokenizer_13a")
    return module


@pytest.mark.reference
@given(st.lists(st.sampled_from(
    list("abcXYZ019 .,-'\"&;<>/()!?$%:@[]^_`{|}~\\\t\n\r\u00a0\u2028éß東") +
    ["&quot;", "&amp;", "&lt;", "&gt;", "quot;", "gt;", "<skipped>", "-\n"]),
    max_size=40).map("".join))
@example(".5,3-4 &amp;quot; &amp;gt; a-\nb")
def test_tokenize_13a_matches_sacrebleu(sacrebleu, text):
    assert tokenize_13a(text) == sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(text).split()


@pytest.mark.reference
@given(corpora(), st.booleans(), st.sampled_from(["13a", "none"]))
def test_corpus_bleu_matches_sacrebleu(sacrebleu, corpus, lowercase, tokenize):
    hyps, streams = corpus
    for method in ("exp", "floor", "add-k", "none"):      # every example, every smoothing
        options = {"smooth_method": method, "lowercase": lowercase, "tokenize": tokenize}
        theirs = sacrebleu.corpus_bleu(hyps, streams, **options)
        # sacrebleu reports add-k's counts after adding k; ours are the raw counts
        _assert_same(corpus_bleu(hyps, streams, **options), theirs, counts=method != "add-k")
        if len(streams) == 1:                 # one string per hypothesis means the same
            _assert_same(corpus_bleu(hyps, streams[0], **options), theirs,
                         counts=method != "add-k")


@pytest.mark.reference
def test_corpus_bleu_matches_sacrebleu_on_examples(sacrebleu):
    hyps = ["The cat sat on the mat.", "It costs $1,000.50 - or 5-10 euros!",
            "Er sagte: &quot;Grüße aus Köln&quot;.", "", "state-of-the-art e-\nmail"]
    refs = [["The cat is on the mat.", "It costs 1,000.50 dollars, or 5 - 10 euros.",
             'Er sagte: "Grüße aus Köln".', "nothing", "state of the art email"],
            ["There is a cat on the mat.", "The price is $1,000.50.", None, "", "state-of-the-art"]]
    for method in ("exp", "floor", "add-k", "none"):
        _assert_same(corpus_bleu(hyps, refs, smooth_method=method),
                     sacrebleu.corpus_bleu(hyps, refs, smooth_method=method),
                     counts=method != "add-k")
    assert corpus_bleu(hyps, refs).score == pytest.approx(
        sacrebleu.corpus_bleu(hyps, refs).score, abs=1e-9)
