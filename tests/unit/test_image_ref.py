"""The image reference grammar: whole-string, ASCII-only matches (red-team finding a)."""

from __future__ import annotations

import pytest

from dockyard.core.errors import ValidationError
from dockyard.core.image_ref import validate_image

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "library/busybox:latest",
        "alice/tools:v1_2.3-rc",
        "registry.example:5000/team/app:2",
        "localhost/app",
        "[::1]:5000/app:1",
        f"busybox@{DIGEST}",
        f"busybox:1.36@{DIGEST}",
    ],
)
def test_valid_references_are_accepted(image: str) -> None:
    assert validate_image(image) == image


@pytest.mark.parametrize(
    "image",
    [
        "busybox\n",  # ``$`` matched before a trailing newline
        "busybox:latest\n",
        f"busybox@{DIGEST}\n",
        "busybox\nprivileged",
        "busybox:t\u00e9st",  # ``\w`` matched Unicode letters
        "busybox:\u0663\u0664",  # Arabic-Indic digits are ``\d``/``\w`` too
        "busybox:\uff21",  # a full-width letter
        "b\u00fcsybox",
        "busybox:latest\r",
        " busybox",
        "busybox ",
    ],
)
def test_trailing_newlines_and_non_ascii_are_refused(image: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_image(image)
    assert err.value.field == "image"
