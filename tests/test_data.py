"""Row checks name the first bad row and what is wrong; tiny datasets load in the hub's columns."""

import pytest

from helpers.data import check_conversations, load_split, parallel_sentences
from helpers.runtime import Hardware, choose_profile

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"text": "no messages"}, "missing the 'messages' column"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"content": "x"}]}, "message 0 has no 'role'"),
        ({"messages": [{"role": "user"}]}, "message 0 has no 'content'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "content is list, not a string"),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
        ({"messages": ["user: hi"]}, "message 0 is a str"),
    ],
)
def test_check_conversations_names_the_first_bad_row(bad, expected):
    rows = [GOOD, GOOD, bad, {"text": "also bad"}]
    with pytest.raises(ValueError) as err:
        check_conversations(rows)
    assert str(err.value).startswith("Row 2:")
    assert expected in str(err.value)


def test_check_conversations_counts_good_rows():
    assert check_conversations([GOOD] * 5) == 5


@pytest.fixture(scope="module")
def tiny_profile():
    from helpers.tiny.build import ensure_built

    ensure_built(["data"])
    return choose_profile(Hardware())


@pytest.mark.parametrize("role", ["chat", "preference", "charts", "news", "pretraining"])
def test_tiny_datasets_have_the_hub_columns(tiny_profile, role):
    for split in ("train", "test"):
        ds = load_split(tiny_profile, role, split, n=5)
        assert len(ds) == 5
        assert set(tiny_profile.datasets[role].columns) <= set(ds.column_names)


def test_tiny_chat_rows_pass_the_row_check(tiny_profile):
    assert check_conversations(load_split(tiny_profile, "chat", "train")) == 3000 + 45  # + duplicates


def test_tiny_charts_match_chartqa_types(tiny_profile):
    ds = load_split(tiny_profile, "charts", "test", n=3)
    assert ds.features["human_or_machine"].names == ["human", "machine"]
    row = ds[0]
    assert row["image"].mode == "RGB" and isinstance(row["label"], list)


def test_unknown_role_and_split_are_refused(tiny_profile):
    with pytest.raises(KeyError, match="roles are"):
        load_split(tiny_profile, "recipes")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_split(tiny_profile, "chat", "validation")


def test_hub_profile_offline_points_to_tiny(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    t4 = choose_profile(Hardware(cuda=True, gpu_name="Tesla T4", vram_gb=15.0, compute_capability=(7, 5)))
    with pytest.raises(RuntimeError, match="COURSE_PROFILE=tiny"):
        load_split(t4, "news", "train")


def test_parallel_sentences_cover_four_languages():
    rows = parallel_sentences()
    assert len(rows) >= 20
    for r in rows:
        assert set(r) == {"id", "en", "th", "vi", "fa"} and all(
            r[k].strip() for k in ("en", "th", "vi", "fa")
        )
    assert any("\u0e00" <= ch <= "\u0e7f" for ch in rows[0]["th"])  # Thai script
    assert any("\u0600" <= ch <= "\u06ff" for ch in rows[0]["fa"])  # Arabic script (Persian)
