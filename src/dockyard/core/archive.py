"""Safe extraction of build contexts: a directory, a .zip, a .tar or a .tar.gz.

Every member is checked before anything is written: no absolute paths, no
``..``, no symlink or hardlink whose target leaves the context, no device
files, FIFOs or sockets; limits on the number of files and the total size; a
zip or gzip bomb (a tiny archive that expands enormously) is refused from its
headers and again while streaming, since headers can lie. Tar extraction also
goes through the stdlib ``filter='data'`` as a second line of defence.

Stdlib only: this module is part of the pure core.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dockyard.core.errors import ValidationError

MiB = 1024 * 1024


class UnsafeArchive(ValidationError):
    """The archive is malformed, too large, or tries to escape its directory."""

    def __init__(self, message: str) -> None:
        super().__init__("context", message)


@dataclass(frozen=True, slots=True)
class Limits:
    max_total_bytes: int = 512 * MiB
    max_files: int = 20_000
    #: Uncompressed / compressed size above which a large archive is a bomb.
    max_ratio: float = 100.0
    #: The ratio is only judged above this many uncompressed bytes (small text compresses well).
    ratio_floor_bytes: int = 8 * MiB


@dataclass(frozen=True, slots=True)
class Extracted:
    files: int
    total_bytes: int


def detect_format(path: Path) -> str:
    """``dir``, ``zip``, ``tar`` or ``tar.gz`` by content (not by name)."""
    if path.is_dir():
        return "dir"
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if len(head) == 512 and head == b"\0" * 512:
        return "tar"  # an empty tar
    raise UnsafeArchive("not a directory, zip, tar or tar.gz archive")


def _check_name(name: str) -> str:
    """The normalised relative path of a member, or UnsafeArchive."""
    if "\\" in name:
        name = name.replace("\\", "/")
    if not name or "\0" in name:
        raise UnsafeArchive(f"bad member name {name!r}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"absolute path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"path with '..' {name!r}")
    return "/".join(parts)


def _check_link(member: str, target: str, *, hard: bool) -> None:
    """A link's target must resolve inside the context (hardlinks name an archive path)."""
    if not target or target.startswith("/") or "\\" in target:
        raise UnsafeArchive(f"link {member!r} -> {target!r} leaves the context")
    base = "" if hard else posixpath.dirname(member)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise UnsafeArchive(f"link {member!r} -> {target!r} leaves the context")


def _judge_totals(files: int, total: int, compressed: int, limits: Limits) -> None:
    if files > limits.max_files:
        raise UnsafeArchive(f"{files} files (limit {limits.max_files})")
    if total > limits.max_total_bytes:
        raise UnsafeArchive(f"{total} bytes uncompressed (limit {limits.max_total_bytes})")
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * max(compressed, 1):
        raise UnsafeArchive(
            f"compression ratio {total / max(compressed, 1):.0f}:1 "
            f"(limit {limits.max_ratio:.0f}:1): refusing a likely archive bomb"
        )


#: Errors the members themselves cause in an empty directory (a file where a
#: directory must go, a name twice, a symlink loop): the archive's fault, not the disk's.
_CONFLICTS = frozenset({errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ELOOP})


def _conflict(exc: OSError) -> UnsafeArchive:
    return UnsafeArchive(f"members conflict: {exc.strerror or exc}")


def _inside(dest: Path, path: Path) -> Path:
    """``path`` resolved, if it is inside ``dest`` (follows symlinks already written)."""
    real_dest = dest.resolve()
    try:
        resolved = path.resolve()
    except RuntimeError as exc:  # a symlink loop (Python < 3.13)
        raise UnsafeArchive(f"{path.relative_to(dest)}: symlink loop") from exc
    if resolved != real_dest and real_dest not in resolved.parents:
        raise UnsafeArchive(f"{path.relative_to(dest)} resolves outside the context")
    return resolved


def _copy_limited(src: IO[bytes], dst: IO[bytes], budget: int) -> int:
    written = 0
    while True:
        chunk = src.read(min(MiB, budget - written + 1))
        if not chunk:
            return written
        written += len(chunk)
        if written > budget:
            raise UnsafeArchive("member larger than its header says, or over the size limit")
        dst.write(chunk)


def extract_tar(source: Path, dest: Path, limits: Limits = Limits()) -> Extracted:
    compressed = source.stat().st_size
    try:
        with tarfile.open(source, mode="r:*") as tar:
            members = _scan_tar(tar, compressed, limits)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:  # includes the data filter's refusals
        raise UnsafeArchive(f"bad tar archive: {exc}") from exc
    except EOFError as exc:
        raise UnsafeArchive(f"truncated archive: {exc}") from exc
    except OSError as exc:
        if exc.errno not in _CONFLICTS:
            raise
        raise _conflict(exc) from exc
    except RecursionError:
        # Second line of defence (the scan refuses the known cases): tarfile copies a
        # link's target when the link cannot be made, and links among themselves
        # can make that endless. The chain of errors it built is dropped.
        raise UnsafeArchive("links that cannot be extracted (a cycle)") from None
    return Extracted(
        files=sum(1 for m in members if m.isfile()), total_bytes=sum(m.size for m in members)
    )


def _scan_tar(tar: tarfile.TarFile, compressed: int, limits: Limits) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    files: set[str] = set()  # regular files so far: what a hardlink may name
    dirs: set[str] = set()
    total = 0
    for member in tar:
        name = _check_name(member.name)
        if not name:
            if member.isdir():
                continue  # the context's root itself: nothing to write (nor its mode)
            raise UnsafeArchive(f"member {member.name!r} would replace the context's root")
        if (member.issym() or member.islnk()) and name in dirs:
            # It cannot replace the directory: tarfile would then copy the link's
            # target in its place, and links naming each other recurse without end.
            raise UnsafeArchive(f"link {name!r} where the archive has a directory")
        # Extracted under the name checked here (tarfile would join the raw one:
        # "c/." is not where "c" goes, and its link could not be made either).
        member.name = name
        if (
            member.isdev()
            or member.isfifo()
            or not (member.isfile() or member.isdir() or member.issym() or member.islnk())
        ):
            raise UnsafeArchive(f"special file {member.name!r} (devices, FIFOs are refused)")
        if member.issym():
            _check_link(name, member.linkname, hard=False)
        elif member.islnk():
            target = _check_name(member.linkname)
            _check_link(name, target, hard=True)
            if target not in files:  # tarfile would fail with KeyError or OSError
                raise UnsafeArchive(f"hard link {name!r} -> {target!r}: no earlier file")
        if member.isfile() or member.islnk():
            files.add(name)
        else:
            files.discard(name)
        if member.isdir():
            dirs.add(name)
        else:
            dirs.discard(name)
        parent = posixpath.dirname(name)
        while parent:  # made for the member if missing
            dirs.add(parent)
            parent = posixpath.dirname(parent)
        total += member.size
        members.append(member)
        _judge_totals(len(members), total, compressed, limits)
    return members


def extract_zip(source: Path, dest: Path, limits: Limits = Limits()) -> Extracted:
    compressed = source.stat().st_size
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            _judge_totals(len(infos), sum(i.file_size for i in infos), compressed, limits)
            plan: list[tuple[zipfile.ZipInfo, str, int]] = []
            for info in infos:
                name = _check_name(info.filename)
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode) if info.create_system == 3 else 0
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                    raise UnsafeArchive(f"special file {info.filename!r} (devices are refused)")
                if info.file_size and info.compress_size == 0:
                    raise UnsafeArchive(f"member {info.filename!r} has no compressed data")
                plan.append((info, name, kind))
            written = 0
            for info, name, kind in plan:
                if not name:
                    continue
                target = dest / name
                if info.is_dir():
                    _inside(dest, target).mkdir(parents=True, exist_ok=True)
                    continue
                _inside(dest, target.parent).mkdir(parents=True, exist_ok=True)
                _inside(dest, target.parent)
                if kind == stat.S_IFLNK:
                    link = archive.read(info)[:4096].decode("utf-8", "replace")
                    _check_link(name, link, hard=False)
                    os.symlink(link, target)
                    continue
                with archive.open(info) as src, open(target, "xb") as dst:
                    budget = min(info.file_size, limits.max_total_bytes - written)
                    written += _copy_limited(src, dst, budget)
                if info.create_system == 3 and (info.external_attr >> 16) & 0o111:
                    target.chmod(0o755)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"bad zip archive: {exc}") from exc
    except FileExistsError as exc:
        raise UnsafeArchive(f"duplicate member {exc.filename!r}") from exc
    except OSError as exc:
        if exc.errno not in _CONFLICTS:
            raise
        raise _conflict(exc) from exc
    return Extracted(files=sum(1 for p in plan if not p[0].is_dir()), total_bytes=written)


def copy_dir(source: Path, dest: Path, limits: Limits = Limits()) -> Extracted:
    """Copy a directory tree, with the same rules (symlinks stay links, inside only)."""
    files = total = 0
    for root, dirs, names in os.walk(source):
        rel_root = Path(root).relative_to(source)
        for entry in [*dirs, *names]:
            path = Path(root) / entry
            rel = (rel_root / entry).as_posix()
            st = path.lstat()
            out = dest / rel
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink(path)
                _check_link(rel, link, hard=False)
                os.symlink(link, out)
            elif stat.S_ISDIR(st.st_mode):
                out.mkdir()
            elif stat.S_ISREG(st.st_mode):
                files += 1
                total += st.st_size
                _judge_totals(files, total, total, limits)
                shutil.copyfile(path, out)
                out.chmod(0o755 if st.st_mode & 0o111 else 0o644)
            else:
                raise UnsafeArchive(f"special file {rel!r} (devices, FIFOs are refused)")
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
    return Extracted(files=files, total_bytes=total)


def extract(source: Path, dest: Path, limits: Limits = Limits()) -> Extracted:
    """Unpack ``source`` (directory, zip, tar, tar.gz) into the empty directory ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty")
    kind = detect_format(source)
    if kind == "dir":
        extracted = copy_dir(source, dest, limits)
    elif kind == "zip":
        extracted = extract_zip(source, dest, limits)
    else:
        extracted = extract_tar(source, dest, limits)
    _check_links(dest)
    return extracted


def _check_links(dest: Path) -> None:
    """Every symlink of the extracted tree resolves inside it. Each link was checked
    as it was written, but a later one can redirect an earlier one (``y -> L/..``
    written before ``L -> .``; ``a/b/c -> ..`` written through ``a/b -> ..``)."""
    real_dest = os.path.realpath(dest)
    for root, dirs, names in os.walk(dest):  # does not follow symlinked dirs
        for entry in [*dirs, *names]:
            path = os.path.join(root, entry)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if real != real_dest and not real.startswith(real_dest + os.sep):
                    rel = os.path.relpath(path, dest)
                    raise UnsafeArchive(f"link {rel!r} -> {os.readlink(path)!r} leaves the context")


def pack(directory: Path) -> bytes:
    """A plain tar of a (checked) directory's contents, as Docker's build API takes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        paths: list[Path] = []
        for root, dirs, names in os.walk(directory):  # does not follow symlinked dirs
            dirs.sort()
            paths.extend(Path(root) / n for n in [*dirs, *sorted(names)])
        for path in paths:
            rel = path.relative_to(directory).as_posix()
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buffer.getvalue()
