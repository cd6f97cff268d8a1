"""Docker image reference grammar (distribution/reference), enforced before use.

An image name never reaches a shell, but it is still validated so that values
such as ``-v`` or ``--privileged`` are refused with a clear error.
"""

from __future__ import annotations

import re

from dockyard.core.errors import ValidationError

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")

MAX_LENGTH = 255


def validate_image(reference: str, field: str = "image") -> str:
    """Return ``reference`` if it is a valid image reference, else raise."""
    if not isinstance(reference, str) or not reference:
        raise ValidationError(field, "is required")
    if len(reference) > MAX_LENGTH:
        raise ValidationError(field, f"is longer than {MAX_LENGTH} characters")
    match = _REFERENCE.match(reference)
    if match is None:
        raise ValidationError(field, f"{reference!r} is not a valid image reference")
    digest = match.group("digest")
    if digest and digest.startswith("sha256:") and len(digest) != len("sha256:") + 64:
        raise ValidationError(field, "sha256 digest must have 64 hex digits")
    return reference


def tagged(reference: str) -> str:
    """``name`` -> ``name:latest`` (as Docker lists images); tagged or digest refs as is."""
    if not reference:
        return ""
    last = reference.rsplit("/", 1)[-1]
    return reference if (":" in last or "@" in reference) else reference + ":latest"
