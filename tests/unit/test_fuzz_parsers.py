"""Fuzzing the parsers of untrusted input with hypothesis: Compose files, build-context
archives and image references never fail with anything but their own errors, and
archives never write outside their directory. (Wire messages: test_protocol.py.)"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.core.archive import Limits, extract
from dockyard.core.compose import IGNORED, REFUSED, convert
from dockyard.core.errors import ValidationError
from dockyard.core.image_ref import dockerfile_images, namespace, validate_image

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- Compose -------------------------------------------------------------------
SERVICE_KEYS = [
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "deploy",
    "scale", "healthcheck", "restart", "labels", "volumes", "user", "privileged", "cap_add",
    "devices", "security_opt", "sysctls", "cpus", "mem_limit", "mem_reservation", "gpus",
    "stop_grace_period", "use_api_socket", "network_mode", "pid", "ipc", "uts", "userns_mode",
    "x-extra", "bogus", *sorted(IGNORED)[:10], *sorted(REFUSED)[:10],
]  # fmt: skip
NESTED_KEYS = [
    "replicas", "resources", "limits", "reservations", "cpus", "memory", "devices",
    "capabilities", "count", "driver", "test", "interval", "timeout", "retries",
    "start_period", "condition", "max_attempts", "delay", "target", "published", "protocol",
    "source", "type", "read_only", "context", "dockerfile", "args", "path", "required",
]  # fmt: skip
TEXT = st.one_of(
    st.sampled_from(
        ["", "busybox", "nginx:1.25", "${X}", "${X:-d}", "$$", "${", "1m30s", "80:80",
         "127.0.0.1:8080:80/tcp", "8000-8010:80", "./data:/data:ro", "/var/run/docker.sock",
         "on-failure", "always", "host", "0.5", "512m", "all", "..", "-1", "1e309"]
    ),
    st.text(max_size=20),
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(NESTED_KEYS), TEXT, st.integers()), inner,
                        max_size=4),
    ),
    max_leaves=12,
)  # fmt: skip
SERVICE = st.one_of(st.dictionaries(st.sampled_from(SERVICE_KEYS), VALUES, max_size=6), VALUES)
SERVICE_NAMES = st.one_of(st.sampled_from(["web", "db", "Bad Name", ""]), st.text(max_size=8))
DOCUMENT = st.fixed_dictionaries(
    {"services": st.one_of(st.dictionaries(SERVICE_NAMES, SERVICE, max_size=3), VALUES)},
    optional={
        "name": TEXT,
        "version": VALUES,
        "volumes": VALUES,
        "networks": VALUES,
        "secrets": VALUES,
        "x-top": VALUES,
    },
)


def _read_file(path: str) -> str:
    if path.endswith("missing"):
        raise FileNotFoundError(path)
    return "A=1\nexport B=${A}\n# comment\nC\n=bad\n"


def _convert(doc: Any, environ: dict[str, str]) -> None:
    try:
        result = convert(
            doc, stack="stack", base_dir="/srv/app", environ=environ, read_file=_read_file
        )
    except ValidationError:  # ComposeError is one
        return
    assert isinstance(result.payloads, list)


@FUZZ
@given(doc=DOCUMENT, environ=st.dictionaries(st.sampled_from(["X", "A", "HOME"]), TEXT))
def test_compose_documents_fail_only_with_compose_errors(
    doc: dict[str, Any], environ: dict[str, str]
) -> None:
    _convert(doc, environ)


@FUZZ
@given(doc=st.one_of(VALUES, st.text()))
def test_compose_anything_fails_only_with_compose_errors(doc: Any) -> None:
    _convert(doc, {})


# -- archives ------------------------------------------------------------------
PARTS = st.sampled_from(["a", "b", "c", "..", ".", "", "outside", "evil", "a b", "é"])
NAMES = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "", "", "/", "./", "../", "//"]),
    st.lists(PARTS, min_size=1, max_size=4),
)
TARGETS = st.one_of(
    NAMES,
    st.sampled_from(["..", "../outside", "../../outside/x", "/etc/passwd", ".", "a/../..", "a"]),
)
KINDS = st.sampled_from(["file", "file", "dir", "symlink", "hardlink", "chr", "blk", "fifo"])
MEMBERS = st.lists(
    st.tuples(KINDS, NAMES, TARGETS, st.binary(max_size=64), st.sampled_from([0o644, 0o755])),
    min_size=1,
    max_size=8,
)
_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_ZIP_MODES = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "hardlink": stat.S_IFREG,
    "chr": stat.S_IFCHR,
    "blk": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}
Member = tuple[str, str, str, bytes, int]


def _write_tar(path: Path, members: list[Member], mode: str) -> None:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for kind, name, target, data, perm in members:
            info = tarfile.TarInfo(name)
            info.type = _TAR_TYPES[kind]
            info.mode = perm
            if kind in ("symlink", "hardlink"):
                info.linkname = target
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)


def _write_zip(path: Path, members: list[Member]) -> None:
    with zipfile.ZipFile(path, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of the fuzz
        for kind, name, target, data, perm in members:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" and name else ""))
            info.create_system = 3
            info.external_attr = (_ZIP_MODES[kind] | perm) << 16
            body = target.encode() if kind == "symlink" else b"" if kind == "dir" else data
            archive.writestr(info, body)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# Randomised, except in CI (where a red run must be reproducible from the suite alone).
@settings(FUZZ, max_examples=300, derandomize=bool(os.environ.get("CI")))
@given(members=MEMBERS, form=st.sampled_from(["tar", "tar.gz", "zip"]))
def test_archives_never_escape_and_fail_only_with_unsafe_archive(
    members: list[Member], form: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outside = root / "outside"
        outside.mkdir()
        (outside / "canary").write_bytes(b"keep")
        source = root / f"context.{form}"
        if form == "zip":
            _write_zip(source, members)
        else:
            _write_tar(source, members, "w:gz" if form == "tar.gz" else "w")
        dest = root / "work" / "ctx"
        try:
            extract(source, dest, Limits(max_files=100, max_total_bytes=64 * 1024))
        except ValidationError:  # UnsafeArchive is one
            ok = False
        else:
            ok = True
        assert _tree(outside) == ["canary"] and (outside / "canary").read_bytes() == b"keep"
        assert _tree(root / "work") == sorted(["ctx", *(f"ctx/{p}" for p in _tree(dest))]), (
            "something was written next to the context"
        )
        assert sorted(p.name for p in root.iterdir()) == sorted(["outside", "work", source.name])
        real = dest.resolve()
        for path in dest.rglob("*"):
            mode = path.lstat().st_mode
            assert stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode), path
            if ok and stat.S_ISLNK(mode):
                # an accepted context holds no link that leads out of it
                resolved = Path(os.path.realpath(path))
                assert resolved == real or real in resolved.parents, (
                    f"{path.relative_to(dest)} -> {os.readlink(path)} leaves the context"
                )


@FUZZ
@given(data=st.binary(max_size=512), form=st.sampled_from(["", ".tar", ".zip"]))
def test_random_bytes_as_an_archive_fail_only_with_unsafe_archive(data: bytes, form: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"blob{form}"
        source.write_bytes(data)
        try:
            extract(source, Path(tmp) / "ctx")
        except ValidationError:
            pass


# -- image references ----------------------------------------------------------
REFERENCE_CHARS = st.sampled_from([*"abcz09._-/:@AZ", "sha256:", "\n", " ", "é", "\x00"])
REFERENCES = st.one_of(
    st.text(max_size=40),
    st.lists(REFERENCE_CHARS, max_size=30).map("".join),
    st.builds(
        lambda host, path, tag: host + path + tag,
        st.sampled_from(["", "localhost/", "registry.example:5000/", "alice/", "Alice/"]),
        st.sampled_from(["busybox", "a/b/c", "x__y", "a--b", "", "-a"]),
        st.sampled_from(["", ":1.36", ":latest\n", "@sha256:" + "0" * 64, "@sha256:00", ":" * 2]),
    ),
)


@FUZZ
@given(reference=REFERENCES)
def test_image_references_fail_only_with_validation_error(reference: str) -> None:
    try:
        accepted = validate_image(reference)
    except ValidationError:
        pass
    else:
        assert accepted == reference
        assert (
            reference.isascii()
            and reference.isprintable()
            and not any(c.isspace() for c in reference)
        ), f"accepted {reference!r}"
        assert 0 < len(reference) <= 255
        owner = namespace(reference)
        assert owner is None or (owner and "/" not in owner and owner == owner.lower())
    namespace(reference)  # never raises, whatever it is given


DOCKERFILE_LINES = st.one_of(
    st.sampled_from(
        ["FROM busybox", "FROM --platform=$P ${BASE} AS build", "ARG BASE=alpine:3", "ARG X",
         "COPY --from=build /a /b", "RUN --mount=type=cache,from=cache,target=/c true",
         "FROM scratch", "FROM", "from build as two", "FROM 0", "COPY --from=0 / /", "\\",
         "RUN echo \\", "# comment", "  ", "FROM $X$Y"]
    ),
    st.text(max_size=30),
)  # fmt: skip


@FUZZ
@given(lines=st.lists(DOCKERFILE_LINES, max_size=10), newline=st.sampled_from(["\n", "\r\n"]))
def test_dockerfile_images_never_raise(lines: list[str], newline: str) -> None:
    images = dockerfile_images(newline.join(lines))
    assert all(isinstance(i, str) for i in images)


#: What the fuzzer found (each was a KeyError/OSError/RuntimeError, or an accepted
#: context with a link leading out of it): now refused as UnsafeArchive.
FOUND: dict[str, tuple[str, list[Member]]] = {
    "hardlink to no member": ("tar", [("hardlink", "b", "a", b"", 0o644)]),
    "hardlink to a directory": (
        "tar",
        [("dir", "a", "", b"", 0o755), ("hardlink", "b", "a", b"", 0o644)],
    ),
    "file where a directory goes": (
        "tar",
        [("file", "a", "", b"x", 0o644), ("file", "a/a", "", b"x", 0o644)],
    ),
    "symlink loop": (
        "zip",
        [("symlink", "a", "a", b"", 0o777), ("file", "a/x", "", b"x", 0o644)],
    ),
    "zip link through a link": (
        "zip",
        [("symlink", "a/b", "..", b"", 0o777), ("symlink", "a/b/c", "..", b"", 0o777)],
    ),
    "link redirected by a later link": (
        "tar",
        [("symlink", "y", "L/..", b"", 0o777), ("symlink", "L", ".", b"", 0o777)],
    ),
}


def test_what_the_fuzzer_found_is_refused() -> None:
    for case, (form, members) in FOUND.items():
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / f"context.{form}"
            if form == "zip":
                _write_zip(source, members)
            else:
                _write_tar(source, members, "w")
            try:
                extract(source, Path(tmp) / "ctx")
            except ValidationError as exc:
                assert exc.field == "context", case
            else:
                raise AssertionError(f"{case}: accepted")


#: Links tarfile could not make (the root, "c/." as written, a link where a directory
#: is); it then copies each link's target instead, and links naming one another
#: recursed until RecursionError, with an error chain ~1,000 deep (what overflowed
#: hypothesis's reporting when the fuzzer met one).
LINK_CYCLES = {
    "root replaced by a link to a self-link": [
        ("symlink", "a b", "a b", b"", 0o644),
        ("symlink", ".", "a b", b"", 0o644),
    ],
    "a link written as c/. twice": [
        ("symlink", ".//./c/.", ".//././.", b"", 0o755),
        ("symlink", ".//./c/.", ".//././.", b"", 0o755),
    ],
    "a link where a directory is, to a self-link": [
        ("symlink", "s", "s", b"", 0o777),
        ("file", "d/f", "", b"x", 0o644),
        ("symlink", "d", "s", b"", 0o777),
    ],
}


@pytest.mark.parametrize("form", ["tar", "tar.gz"])
@pytest.mark.parametrize("case", sorted(LINK_CYCLES))
def test_links_tarfile_cannot_make_end_in_unsafe_archive_not_recursion(
    case: str, form: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"context.{form}"
        _write_tar(source, LINK_CYCLES[case], "w:gz" if form == "tar.gz" else "w")
        dest = Path(tmp) / "ctx"
        try:
            extract(source, dest)
        except ValidationError as exc:
            assert exc.field == "context"
            chain, error = 0, exc.__cause__ or exc.__context__
            while error is not None and chain < 50:
                chain, error = chain + 1, error.__cause__ or error.__context__
            assert chain < 5, f"{case}: an error chain {chain}+ deep"
        else:
            real = os.path.realpath(dest)
            for path in dest.rglob("*"):
                assert os.path.realpath(path).startswith(real), path
