"""CPU and memory parsing: absurd numbers are a ValidationError naming the field, never
an OverflowError (a 500) or a value too large for the store."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.core.errors import ValidationError
from dockyard.core.resources import (
    MAX_CPU_MILLIS,
    MAX_MEMORY,
    MIN_MEMORY,
    parse_cpu,
    parse_memory,
)


@pytest.mark.parametrize(
    "value", [1e308, -1e308, math.inf, -math.inf, math.nan, "1e308", 10**400, "9" * 400, 0, -1]
)
def test_absurd_cpu_is_refused_by_field(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_cpu(value)  # type: ignore[arg-type]
    assert caught.value.field == "cpu"


@pytest.mark.parametrize(
    "value", ["9999999999999999999999g", "1e400g", 10**30, 2**63, "1" + "0" * 400, "5m", -1]
)
def test_absurd_memory_is_refused_by_field(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_memory(value)  # type: ignore[arg-type]
    assert caught.value.field == "memory"


@given(st.one_of(st.floats(), st.integers(), st.text(max_size=40)))
def test_parse_cpu_accepts_or_names_the_field(value: float | int | str) -> None:
    try:
        millis = parse_cpu(value)
    except ValidationError as exc:
        assert exc.field == "cpu"
    else:
        assert 0 < millis <= MAX_CPU_MILLIS


@given(st.one_of(st.integers(), st.text(max_size=40)))
def test_parse_memory_accepts_or_names_the_field(value: int | str) -> None:
    try:
        amount = parse_memory(value)
    except ValidationError as exc:
        assert exc.field == "memory"
    else:
        assert MIN_MEMORY <= amount <= MAX_MEMORY < 2**63
