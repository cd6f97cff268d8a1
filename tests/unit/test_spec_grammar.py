"""Job names and environment keys match whole (the trailing-newline case of red-team
finding a: ``$`` also matches before a final ``\\n``)."""

from __future__ import annotations

import pytest

from dockyard.core.errors import ValidationError
from dockyard.core.specs import build_job_spec


@pytest.mark.parametrize("name", ["web\n", "web\r", "w\u00e9b", "web\nx"])
def test_names_with_a_newline_or_non_ascii_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        build_job_spec(name=name, image="busybox")
    assert err.value.field == "name"


@pytest.mark.parametrize("key", ["PATH\n", "A\nB", "\u00c4"])
def test_env_keys_with_a_newline_or_non_ascii_are_refused(key: str) -> None:
    with pytest.raises(ValidationError) as err:
        build_job_spec(name="x", image="busybox", env={key: "1"})
    assert err.value.field.startswith("env")


def test_plain_names_and_keys_pass() -> None:
    spec = build_job_spec(name="web-1.a_b", image="busybox", env={"PATH_2": "x"})
    assert (spec.name, dict(spec.env)) == ("web-1.a_b", {"PATH_2": "x"})
