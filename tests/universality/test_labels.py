"""Labels of models in one comparison: names, and file stems where names repeat."""

from __future__ import annotations

from rganalysis.universality.labels import unique_labels


def test_repeated_names_take_their_file_stems():
    assert unique_labels(["r18", "r18", "bert"], ["a/seed0.h5", "b/seed1.h5", "c/x.h5"]) == [
        "seed0",
        "seed1",
        "bert",
    ]


def test_stems_that_do_not_tell_them_apart_give_numbers():
    assert unique_labels(["r18", "r18"], ["a/f.h5", "b/f.h5"]) == ["r18", "r18#2"]
    assert unique_labels(["r18", "r18"], None) == ["r18", "r18#2"]
    assert unique_labels(["r18", "r18", "seed0"], ["x/seed0.h5", "y/seed1.h5", ""]) == [
        "r18",
        "r18#2",
        "seed0",
    ]
    assert unique_labels(["a", "b"], ["1.h5", "2.h5"]) == ["a", "b"]  # no repeat: names kept


def test_labels_are_all_different_whatever_the_names():
    import pytest

    from rganalysis.errors import InvalidParameterError

    assert unique_labels(["a", "a", "a#2"]) == ["a", "a#3", "a#2"]
    assert len(set(unique_labels(["a#2", "a", "a"]))) == 3
    with pytest.raises(InvalidParameterError, match="2 sources for 3 names"):
        unique_labels(["a", "a", "b"], ["x.h5", "y.h5"])
