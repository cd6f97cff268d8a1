"""Safe extraction of build contexts: hostile archives are refused, nothing lands outside."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.core.archive import Limits, UnsafeArchive, detect_format, extract, pack

DOCKERFILE = b"FROM scratch\nCOPY hello /hello\n"


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(dest, outside): dest is where extraction goes; outside must stay empty."""
    outside = tmp_path / "outside"
    outside.mkdir()
    return tmp_path / "work" / "ctx", outside


def _nothing_outside(tmp_path: Path) -> None:
    written = [p for p in (tmp_path / "outside").rglob("*")]
    assert written == []
    assert not (tmp_path / "work" / "evil").exists()


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_good_tar_round_trip(tmp_path: Path, mode: str) -> None:
    src = _tar(
        tmp_path / "ctx.tar",
        [
            (_file("Dockerfile"), DOCKERFILE),
            (_file("sub/hello"), b"hi"),
            (_link("l", "hello"), None),
        ],
        mode,
    )
    assert detect_format(src) == ("tar.gz" if mode == "w:gz" else "tar")
    result = extract(src, tmp_path / "out")
    assert result.files == 2
    assert (tmp_path / "out" / "Dockerfile").read_bytes() == DOCKERFILE
    assert (tmp_path / "out" / "sub" / "hello").read_bytes() == b"hi"


def test_zip_keeps_executable_bit_per_member(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    src = tmp_path / "ctx.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.write(tool, "tool")
        z.writestr("data.txt", "plain")  # last member not executable
    extract(src, tmp_path / "out")
    assert (tmp_path / "out" / "tool").stat().st_mode & 0o111
    assert not (tmp_path / "out" / "data.txt").stat().st_mode & 0o111


def test_good_zip_and_dir(tmp_path: Path) -> None:
    src = tmp_path / "ctx.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Dockerfile", DOCKERFILE)
        z.writestr("a/b/c.txt", "deep")
    assert detect_format(src) == "zip"
    extract(src, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b" / "c.txt").read_text() == "deep"
    extract(tmp_path / "out", tmp_path / "copy")
    assert (tmp_path / "copy" / "Dockerfile").read_bytes() == DOCKERFILE
    with tarfile.open(fileobj=io.BytesIO(pack(tmp_path / "copy"))) as tar:
        assert sorted(tar.getnames()) == ["Dockerfile", "a", "a/b", "a/b/c.txt"]


HOSTILE_TARS: dict[str, Callable[[], list[tuple[tarfile.TarInfo, bytes | None]]]] = {
    "zip-slip": lambda: [(_file("../../outside/evil"), b"x")],
    "absolute": lambda: [(_file("/tmp/evil-absolute-dockyard"), b"x")],
    "symlink-etc": lambda: [(_link("etc", "/etc"), None), (_file("etc/evil"), b"x")],
    "symlink-up": lambda: [(_link("up", "../../outside"), None), (_file("up/evil"), b"x")],
    "hardlink-out": lambda: [(_link("passwd", "/etc/passwd", tarfile.LNKTYPE), None)],
    "hardlink-dotdot": lambda: [(_link("p", "../outside/x", tarfile.LNKTYPE), None)],
    "device": lambda: [(_link("null", "", tarfile.CHRTYPE), None)],
    "fifo": lambda: [(_link("pipe", "", tarfile.FIFOTYPE), None)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_hostile_tar_refused(
    tmp_path: Path, sandbox: tuple[Path, Path], case: str, mode: str
) -> None:
    dest, _ = sandbox
    src = _tar(tmp_path / "evil.tar", HOSTILE_TARS[case](), mode)
    with pytest.raises(UnsafeArchive):
        extract(src, dest)
    _nothing_outside(tmp_path)
    assert not Path("/tmp/evil-absolute-dockyard").exists()


def _zip_symlink(z: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z.writestr(info, target)


def _zip_device(z: zipfile.ZipFile, name: str) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFCHR | 0o666) << 16
    z.writestr(info, "")


HOSTILE_ZIPS: dict[str, Callable[[zipfile.ZipFile], None]] = {
    "zip-slip": lambda z: z.writestr("../../outside/evil", "x"),
    "backslash-slip": lambda z: z.writestr("..\\..\\outside\\evil", "x"),
    "absolute": lambda z: z.writestr("/tmp/evil-absolute-dockyard", "x"),
    "symlink-etc": lambda z: _zip_symlink(z, "etc", "/etc"),
    "symlink-up": lambda z: _zip_symlink(z, "up", "../../outside"),
    "device": lambda z: _zip_device(z, "null"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ZIPS))
def test_hostile_zip_refused(tmp_path: Path, sandbox: tuple[Path, Path], case: str) -> None:
    dest, _ = sandbox
    src = tmp_path / "evil.zip"
    with zipfile.ZipFile(src, "w") as z:
        HOSTILE_ZIPS[case](z)
    with pytest.raises(UnsafeArchive):
        extract(src, dest)
    _nothing_outside(tmp_path)
    assert not Path("/tmp/evil-absolute-dockyard").exists()


def test_zip_bomb_refused_from_headers(tmp_path: Path) -> None:
    src = tmp_path / "bomb.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros", b"\0" * (64 * 1024 * 1024))
    assert src.stat().st_size < 1024 * 1024
    with pytest.raises(UnsafeArchive, match="bomb"):
        extract(src, tmp_path / "out")
    assert not (tmp_path / "out" / "zeros").exists()


def test_zip_lying_header_stopped_while_streaming(tmp_path: Path) -> None:
    src = tmp_path / "liar.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as z:
        z.writestr("f", b"A" * 1000)
    data = bytearray(src.read_bytes())
    # Shrink the declared uncompressed size in the central directory (and local header).
    declared = (1000).to_bytes(4, "little")
    smaller = (10).to_bytes(4, "little")
    data = bytearray(bytes(data).replace(declared + declared, declared + smaller))
    src.write_bytes(bytes(data))
    with pytest.raises(UnsafeArchive):
        extract(src, tmp_path / "out")


def test_tar_gz_bomb_and_limits(tmp_path: Path) -> None:
    src = _tar(tmp_path / "bomb.tar.gz", [(_file("zeros"), b"\0" * (32 * 1024 * 1024))], "w:gz")
    with pytest.raises(UnsafeArchive, match="bomb"):
        extract(src, tmp_path / "out")
    many = _tar(tmp_path / "many.tar", [(_file(f"f{i}"), b"x") for i in range(30)])
    with pytest.raises(UnsafeArchive, match="files"):
        extract(many, tmp_path / "out2", Limits(max_files=10))
    big = _tar(tmp_path / "big.tar", [(_file("big"), b"x" * 5000)])
    with pytest.raises(UnsafeArchive, match="bytes"):
        extract(big, tmp_path / "out3", Limits(max_total_bytes=1000))


def test_directory_with_escaping_symlink_refused(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_bytes(DOCKERFILE)
    os.symlink("/etc", ctx / "etc")
    with pytest.raises(UnsafeArchive):
        extract(ctx, tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world" * 100)
    with pytest.raises(UnsafeArchive):
        extract(junk, tmp_path / "out")
