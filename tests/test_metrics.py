"""Metrics against hand-computed cases (and seqeval, where it is installed)."""

import math
import random

import pytest

from scratchlm.metrics import (
    accuracy, entity_scores, f1_macro, get_entities, normalize_answer, perplexity,
    squad_exact, squad_f1, squad_scores)


def test_accuracy():
    assert accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == 0.75
    assert accuracy(["a"], ["a"]) == 1.0
    with pytest.raises(ValueError, match="same length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="no examples"):
        accuracy([], [])


def test_f1_macro_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    # class 0: P = 2/2, R = 2/3 -> F1 = 0.8
    # class 1: P = 1/2, R = 1/2 -> F1 = 0.5
    # class 2: P = 1/2, R = 1/1 -> F1 = 2/3
    assert f1_macro(y_true, y_pred) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # a class never predicted and never true, named in labels, counts as 0
    assert f1_macro(y_true, y_pred, labels=[0, 1, 2, 3]) == pytest.approx(
        (0.8 + 0.5 + 2 / 3) / 4)
    # majority-class prediction: F1 of the majority class only, averaged over both classes
    assert f1_macro([0, 0, 0, 1], [0, 0, 0, 0]) == pytest.approx((2 * 0.75 / 1.75) / 2)


def test_get_entities_bio():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
    assert get_entities(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5)]


def test_get_entities_i_tag_starts_an_entity():
    # seqeval's default (conlleval) reading: an I- after O, or after another
    # type, opens an entity of its own type.
    assert get_entities(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 2)]
    assert get_entities(["I-PER"]) == [("PER", 0, 0)]
    assert get_entities(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]
    assert get_entities(["I-ORG", "B-ORG", "I-ORG"]) == [("ORG", 0, 0), ("ORG", 1, 2)]


def test_get_entities_iobes_and_bad_tags():
    assert get_entities(["S-PER", "B-LOC", "E-LOC", "S-LOC"]) == [
        ("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)]
    with pytest.raises(ValueError, match="not a tag"):
        get_entities(["B-PER", "X"])


def test_entity_scores_by_hand():
    # seqeval's README example
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    s = entity_scores(y_true, y_pred)
    # true {MISC 3-5, PER 0-1}, predicted {MISC 2-5, PER 0-1}: one exact match of two
    assert (s["precision"], s["recall"], s["f1"]) == (0.5, 0.5, 0.5)
    assert s["per_type"]["PER"]["f1"] == 1.0 and s["per_type"]["MISC"]["f1"] == 0.0


def test_entity_scores_span_and_type_must_match():
    y_true = [["B-PER", "I-PER", "O", "B-LOC"]]
    # right span wrong type; right type wrong span; one correct; one spurious
    y_pred = [["B-LOC", "I-LOC", "O", "B-LOC"]]
    s = entity_scores(y_true, y_pred)
    assert s["precision"] == 0.5 and s["recall"] == 0.5
    y_pred = [["B-PER", "O", "B-PER", "B-LOC"]]
    s = entity_scores(y_true, y_pred)
    # predicted PER 0-0, PER 2-2, LOC 3-3: one correct of 3; recall 1 of 2
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == 0.5
    assert s["f1"] == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    # all O: nothing predicted, precision 0 by convention
    s = entity_scores(y_true, [["O"] * 4])
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="sentence 0"):
        entity_scores(y_true, [["O"]])


@pytest.mark.reference
def test_entity_scores_match_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

    rng = random.Random(0)
    tags = ["O", "B-A", "I-A", "B-B", "I-B"]
    for _ in range(300):
        y_true = [[rng.choice(tags) for _ in range(rng.randint(1, 9))] for _ in range(4)]
        y_pred = [[rng.choice(tags) for _ in s] for s in y_true]
        for s in y_true:
            assert sorted(get_entities(s)) == sorted(seqeval_entities(s))
        ours = entity_scores(y_true, y_pred)
        assert ours["f1"] == pytest.approx(seqeval.f1_score(y_true, y_pred))
        assert ours["precision"] == pytest.approx(seqeval.precision_score(y_true, y_pred))


def test_squad_normalisation():
    assert normalize_answer("The  Cat's hat!") == "cats hat"
    assert normalize_answer("an apple, a pear and THE plum.") == "apple pear and plum"
    assert normalize_answer("theory") == "theory"               # articles as whole words only
    assert normalize_answer("  ") == ""


def test_squad_em_and_f1_by_hand():
    assert squad_exact("the Eiffel Tower", "Eiffel tower.") == 1.0
    assert squad_exact("Eiffel", "Eiffel Tower") == 0.0
    # pred tokens [eiffel], gold [eiffel, tower]: P = 1, R = 1/2 -> F1 = 2/3
    assert squad_f1("Eiffel", "the Eiffel Tower") == pytest.approx(2 / 3)
    # multiset overlap: pred [a1 a1 b], gold [a1 b b]: common = 2 -> P = R = 2/3
    assert squad_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert squad_f1("red", "blue") == 0.0
    assert squad_f1("", "blue") == 0.0
    assert squad_f1("the", "a") == 1.0                         # both normalise to nothing
    s = squad_scores(["Eiffel", "Paris"], [["the Eiffel Tower", "Eiffel"], ["London"]])
    assert s == {"exact_match": 0.5, "f1": 0.5}               # best over gold answers
    assert squad_scores([""], [["x"]]) == {"exact_match": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="no gold answer"):
        squad_scores(["x"], [[]])


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(50)) == pytest.approx(50)
    assert perplexity(1000.0) == math.inf
    with pytest.raises(ValueError):
        perplexity(float("nan"))
