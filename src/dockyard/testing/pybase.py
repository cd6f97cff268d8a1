"""A local Python base image for the Dockerfile, made without a registry.

Production builds ``FROM python:3.11-slim`` (the Dockerfile's default ``BASE``). Here
no registry is reachable, so tests ``docker import`` a root filesystem made from this
machine: the running interpreter (relocated to ``/usr/local``), its standard library
(without tests and GUI modules), the installed distributions dockyard's chosen extras
need (pip included), their byte code (a container starts without compiling them), and
every shared library those need (``ldd``). The Dockerfile
then installs the wheel into it with ``PIP_NO_INDEX=1 PIP_NO_DEPS=1``.
"""

from __future__ import annotations

import importlib.metadata as md
import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PREFIX = "usr/local"
VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "site-packages"}
SKIP_STDLIB |= {"ensurepip", "pydoc_data"}
CHANGES = [
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    "ENV LD_LIBRARY_PATH=/usr/local/lib",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]


def distributions(
    requires: Iterable[str], extras: Iterable[str] = ("server", "postgres")
) -> set[str]:
    """Names of the installed distributions that ``requires`` (a wheel's Requires-Dist
    lines) need with ``extras`` chosen, transitively, and pip."""
    wanted: set[str] = {"pip"}
    envs = [{"extra": e} for e in extras] or [{"extra": ""}]
    todo: list[tuple[Requirement, list[dict[str, str]]]] = [
        (Requirement(text), envs) for text in requires
    ]
    while todo:
        req, req_envs = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate(env) for env in req_envs):
            continue
        key = canonicalize_name(req.name)
        chosen = [{"extra": e} for e in sorted(req.extras)]
        if key in wanted and not chosen:
            continue
        wanted.add(key)
        try:
            below = md.requires(req.name) or []
        except md.PackageNotFoundError as exc:
            raise RuntimeError(f"{req.name} is not installed here (pip install it)") from exc
        todo += [(Requirement(text), chosen or [{"extra": ""}]) for text in below]
    return wanted


def wheel_requires(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    import email.parser
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(archive.read(name).decode())
    return list(meta.get_all("Requires-Dist") or [])


def _dist_files(names: set[str]) -> Iterator[tuple[Path, str]]:
    """(file on disk, path inside site-packages) of each distribution's files."""
    seen: set[str] = set()
    for dist in md.distributions():
        key = canonicalize_name(dist.metadata["Name"])
        if key not in names or key in seen:
            continue
        seen.add(key)
        for entry in dist.files or []:
            rel = str(entry)
            if rel.startswith(".."):
                continue  # scripts in bin/
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                yield path, rel
    missing = names - seen
    if missing:
        raise RuntimeError(f"not installed here: {sorted(missing)}")


def _stdlib_files() -> Iterator[tuple[Path, str]]:
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"])
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = [d for d in dirnames if d not in SKIP_STDLIB and not d.startswith("config-")]
        for name in filenames:
            if name.endswith(".exe") or name.startswith("_tkinter"):
                continue
            path = Path(dirpath) / name
            yield path, str(path.relative_to(stdlib))


def _libraries(elves: Iterable[Path]) -> set[Path]:
    """The shared libraries (and the loader) ``ldd`` finds for these ELF files."""
    found: set[Path] = set()
    for elf in elves:
        result = subprocess.run(["ldd", str(elf)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if match:
                found.add(Path(match.group(1)))
    return found


def _add(tar: tarfile.TarFile, source: Path, arcname: str) -> None:
    info = tar.gettarinfo(str(source.resolve()), arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    with source.resolve().open("rb") as f:
        tar.addfile(info, f)


def _dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def write_rootfs(
    out: Path, requires: Iterable[str], extras: Iterable[str] = ("server", "postgres")
) -> int:
    """Write the root filesystem tarball; return how many files it holds."""
    exe = Path(sys.base_prefix) / "bin" / VERSION
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "/usr/lib")
    libpython = libdir / str(sysconfig.get_config_var("INSTSONAME") or "")
    lib = f"{PREFIX}/lib/{VERSION}"
    entries: list[tuple[Path, str]] = [(exe, f"{PREFIX}/bin/{VERSION}")]
    if libpython.is_file():
        entries.append((libpython, f"{PREFIX}/lib/{libpython.name}"))
    entries += [(p, f"{lib}/{rel}") for p, rel in _stdlib_files()]
    entries += [
        (p, f"{lib}/site-packages/{rel}") for p, rel in _dist_files(distributions(requires, extras))
    ]
    elves = [p for p, arc in entries if p.name.endswith(".so") or ".so." in p.name or p == exe]
    local_libs = {arc.rsplit("/", 1)[-1] for _, arc in entries if ".so" in arc}
    for library in sorted(_libraries(elves)):
        if library.name not in local_libs and library != libpython:
            entries.append((library, str(library).lstrip("/")))
    with tarfile.open(out, "w") as tar:
        for name in ("tmp",):
            _dir(tar, name, 0o1777)
        for name in ("root", "etc", "usr", "usr/local", "usr/local/bin"):
            _dir(tar, name, 0o755)
        done: set[str] = set()
        for source, arcname in entries:
            if arcname not in done:
                done.add(arcname)
                _add(tar, source, arcname)
        for alias in ("python3", "python"):
            link = tarfile.TarInfo(f"{PREFIX}/bin/{alias}")
            link.type, link.linkname = tarfile.SYMTYPE, VERSION
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return len(done)


def import_base(
    client: Any, wheel: Path, out: Path, tag: str = "dockyard/python-base:local"
) -> str:
    """Write the tarball for ``wheel``'s dependencies to ``out``, ``docker import`` it as
    ``tag``."""
    write_rootfs(out, wheel_requires(wheel))
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_file(str(out), repository=repository, tag=version, changes=CHANGES)
    return tag
