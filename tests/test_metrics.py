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
