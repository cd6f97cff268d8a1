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
#: ASCII only: ``\w`` would also match any Unicode letter or digit.
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
#: Matched with ``fullmatch`` (a ``$`` would also match before a trailing newline), and
#: ASCII only (``re.ASCII``), like Docker's own grammar.
_REFERENCE = re.compile(
    rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII
)

MAX_LENGTH = 255


def validate_image(reference: str, field: str = "image") -> str:
    """Return ``reference`` if it is a valid image reference, else raise."""
    if not isinstance(reference, str) or not reference:
        raise ValidationError(field, "is required")
    if len(reference) > MAX_LENGTH:
        raise ValidationError(field, f"is longer than {MAX_LENGTH} characters")
    match = _REFERENCE.fullmatch(reference)
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


def namespace(reference: str) -> str | None:
    """The first path component of a reference with no registry host (``alice`` of
    ``alice/tools:v1``), or None (``busybox``, ``registry.example:5000/x/y``).

    Docker reads the first component as a registry host when it has a ``.`` or a
    ``:`` or is ``localhost``; dockyard's builds tag images ``<owner>/<name>``, so
    the namespace of a local image is its owner's name.
    """
    name = reference.split("@", 1)[0]
    parts = name.split("/")
    if len(parts) < 2:
        return None
    first = parts[0]
    if "." in first or ":" in first or first == "localhost" or first != first.lower():
        return None
    return first


_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", re.IGNORECASE)
_FROM = re.compile(r"^\s*FROM\s+(.*)$", re.IGNORECASE)
_FROM_FLAG = re.compile(r"--from=(\S+)", re.IGNORECASE)
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def dockerfile_images(text: str) -> list[str]:
    """Every image a Dockerfile reads: ``FROM`` lines and ``COPY --from=`` /
    ``RUN --mount=...,from=`` sources that are not earlier stages. ``ARG`` defaults
    before a ``FROM`` are substituted; a reference left with a ``$`` is returned as
    is (the caller refuses what it cannot resolve)."""
    lines = _logical_lines(text)
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []

    def substitute(value: str) -> str:
        return _VAR.sub(lambda m: args.get(m.group(1), m.group(0)), value)

    for line in lines:
        arg = _ARG.match(line)
        if arg and not stages and not images:
            args[arg.group(1)] = (arg.group(2) or "").strip("\"'")
            continue
        found = _FROM.match(line)
        if found:
            words = [w for w in found.group(1).split() if not w.startswith("--")]
            if not words:
                continue
            ref = substitute(words[0])
            if ref.lower() != "scratch" and ref not in stages:
                images.append(ref)
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2])
            stages.add(str(len(stages)))
            continue
        for source in _FROM_FLAG.findall(line) + re.findall(r"[,\s]from=([^,\s]+)", line):
            ref = substitute(source.strip("\"'"))
            if ref not in stages and not ref.isdigit():
                images.append(ref)
    return images


def _logical_lines(text: str) -> list[str]:
    """Dockerfile lines with ``\\`` continuations joined and comments dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        out.append(current + stripped)
        current = ""
    if current:
        out.append(current)
    return out
