import pytest

from helpers.metrics import exact_match, exact_match_by_group


def test_exact_match_ignores_case_and_spacing_only():
    assert exact_match([" Odd ", "4 5", "45"], ["odd", "4  5", "4 5"]) == pytest.approx(2 / 3)


def test_exact_match_by_group_matches_a_hand_count():
    scores = exact_match_by_group(["a", "b", "c", "d"], ["a", "x", "c", "d"], ["g1", "g1", "g2", "g2"])
    assert scores == {"g1": 0.5, "g2": 1.0, "all": 0.75}


def test_exact_match_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        exact_match(["a", "b"], ["a"])


@pytest.mark.parametrize(
    "prediction, target, right",
    [
        ("1,050", "1000", True),  # commas, within 5%
        ("1,051", "1000", False),  # 5.1% off
        ("45%", "45", True),  # a percent sign
        ("47.2", "45%", True),  # 4.9% off
        ("-3.1", "-3", True),  # signs
        ("3", "-3", False),
        ("+2", "2", True),
        ("0.0", "0", True),  # a zero target needs an exact zero
        ("0.01", "0", False),
        ("0.525", "0.5", True),  # decimals
        (" Orange ", "orange", True),  # words: case and spaces only
        ("oranges", "orange", False),
        ("50\n5", "50", False),  # not one number
    ],
)
def test_relaxed_accuracy_by_hand(prediction, target, right):
    from helpers.metrics import relaxed_accuracy

    assert relaxed_accuracy(prediction, target) is right


def test_relaxed_accuracy_batch_accepts_label_lists():
    from helpers.metrics import relaxed_accuracy_batch

    assert relaxed_accuracy_batch(["10", "red", "x"], [["10"], "Red", ["y", "z"]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        relaxed_accuracy_batch(["a", "b"], ["a"])


def test_binomial_interval_matches_the_wilson_formula():
    from helpers.metrics import binomial_interval

    low, high = binomial_interval(0.5, 200)
    assert (round(low, 4), round(high, 4)) == (0.4314, 0.5686)  # Wilson, z = 1.96, by hand
    low, high = binomial_interval(0.0, 200)
    assert low == 0.0 and 0.0 < high < 0.02  # never below 0, and not empty at 0%
    assert binomial_interval(0.3, 2000)[1] - binomial_interval(0.3, 2000)[0] < 0.05  # more items, narrower
