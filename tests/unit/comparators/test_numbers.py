"""The built-in numbers comparator, called directly: which values it takes, when two of them are
equal within the tolerances, and the first difference it names (with the path into containers)."""

import pytest

from metaflow_repro.comparators.numbers import compare

TOL = {"rel_tol": 1e-9, "abs_tol": 0.0}


def walk(a, b, **options):
    """The description of the first difference, or None when equal."""
    found = compare(a, b, {**TOL, **options})
    assert found is not None, "the comparator declined two numeric values"
    verdict, detail = found
    assert (verdict == "equivalent") == detail.startswith("equal within")
    return None if verdict == "equivalent" else detail


@pytest.mark.parametrize("value", ["text", b"bytes", None, ["a", ("b",)], {"k": "v"}, True, [[[[[1]]]]]])
def test_values_without_a_number_near_the_top_are_not_its_business(value):
    assert compare(value, value, TOL) is None


def test_a_number_and_a_value_without_one_are_not_its_business():
    assert compare(1, "1", TOL) is None and compare("1", 1, TOL) is None


def test_the_equivalent_verdict_names_the_tolerances():
    assert compare(1.0, 1.0, {"rel_tol": 0.5, "abs_tol": 2.0}) == ("equivalent", "equal within rel_tol=0.5, abs_tol=2")


@pytest.mark.parametrize(
    "a,b,options,detail",
    [
        (1, 1, {}, None),
        (1, 1.0, {}, None),
        (float("nan"), float("nan"), {}, None),
        (1.0, 1.0 + 1e-12, {}, None),
        (1.0, 1.1, {}, "value: 1.0 != 1.1 (difference 0.1)"),
        (1.0, 1.1, {"rel_tol": 0.2}, None),
        (0.0, 1e-300, {}, "value: 0.0 != 1e-300 (difference 1e-300)"),
        (0.0, 1e-300, {"abs_tol": 1e-3}, None),
        (float("nan"), 1.0, {}, "value: nan != 1.0 (difference nan)"),
        (1 + 1j, 1 + 1j + 1e-12, {}, None),
        (1j, 2j, {}, "value: 1j != 2j (difference 1)"),
        (1j, 2j, {"rel_tol": 0.6}, None),
        (0j, 1e-3, {"abs_tol": 1e-2}, None),
        (0j, 1e-3, {}, "value: 0j != 0.001 (difference 0.001)"),
    ],
)
def test_numbers_are_equal_within_the_tolerances(a, b, options, detail):
    assert walk(a, b, **options) == detail


def test_booleans_are_compared_by_equality_not_by_tolerance():
    assert walk([True, 0.5], [1.0, 0.5]) is None
    assert walk([True, 1], [False, 1]) == "[0]: True != False"
    assert walk([1.0, True], [1.0, 1.0 + 1e-12]) == "[1]: True != 1.000000000001"


def test_containers_are_walked_and_the_first_difference_is_named_by_its_path():
    assert walk([1.0, (2.0, {"k": 3.0})], [1.0, (2.0, {"k": 3.0 + 1e-12})]) is None
    assert walk([1.0, (2.0, {"k": 3.0})], [1.0, (2.0, {"k": 4.0})]) == "[1][1]['k']: 3.0 != 4.0 (difference 1)"
    assert walk({"a": [1, 2], "b": 5}, {"a": [1, 3], "b": 6}) == "['a'][1]: 2 != 3 (difference 1)"


def test_lengths_and_keys_that_differ_are_named():
    assert walk([1, 2], [1, 2, 3]) == "value: length 2 != 3"
    assert walk([1, [2]], [1, [2, 3]]) == "[1]: length 1 != 2"
    assert walk({"a": 1, "b": 2}, {"a": 1, "c": 2}) == "value: keys differ ([\"'b'\", \"'c'\"])"
    many = walk({i: 1 for i in range(10)}, {i + 10: 1 for i in range(10)})
    assert many == "value: keys differ (['0', '1', '10', '11', '12'])"


def test_a_list_and_a_tuple_are_compared_by_plain_equality():
    assert walk([1, 2], (1, 2)) == "value: [1, 2] != (1, 2)"
    assert walk([1, "x"], [1, "x"]) is None
    assert walk([1, "x"], [1, "y"]) == "[1]: 'x' != 'y'"


def test_values_that_are_not_numbers_inside_containers_are_compared_by_equality():
    assert walk({"n": 1.0, "s": None}, {"n": 1.0, "s": 0}) == "['s']: None != 0"
