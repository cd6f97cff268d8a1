"""``dockyard build``: upload a build context, follow the build on the nodes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.cli.app import JsonOpt, TokenOpt, UrlOpt, app, call, client, fail
from dockyard.client import Client

POLL_S = 0.3
TERMINAL = ("succeeded", "failed")


def follow_build(
    api: Client, build: dict[str, Any], quiet: bool = False, timeout: float = 3600.0
) -> dict[str, Any]:
    """Print the build's output as it arrives (with a progress line); the final state."""
    offset = 0
    deadline = time.monotonic() + timeout
    nodes = len(build.get("nodes") or [])
    status = render.console.status(f"building {build['image']} on {nodes} node(s)")
    if not quiet:
        status.start()
    try:
        while True:
            build = call(api.build_status, build["id"], offset)
            for line in build["lines"]:
                if not quiet:
                    render.console.print(escape(line), highlight=False)
            offset = build["offset"] + len(build["lines"])
            done = sum(1 for n in build["nodes"] if n["state"] in TERMINAL)
            status.update(
                f"building {build['image']}: {done}/{len(build['nodes'])} node(s) done, "
                f"{offset} lines"
            )
            if build["state"] in TERMINAL or time.monotonic() > deadline:
                return build
            time.sleep(POLL_S)
    finally:
        status.stop()


def build_image(
    api: Client, context: Path, tag: str | None, dockerfile: str = "Dockerfile", quiet: bool = False
) -> str:
    """Build and wait; the image reference, or exit 1 with the build error."""
    started = call(api.build, context, tag, dockerfile)
    result = follow_build(api, started, quiet=quiet)
    if result["state"] != "succeeded":
        fail(f"build {result['id']} failed: {result['error'] or result['state']}")
    return str(result["image"])


@app.command()
def build(
    context: Annotated[Path, typer.Argument(help="A directory, .zip, .tar or .tar.gz.")],
    tag: Annotated[
        str | None,
        typer.Option("--tag", "-t", help="name[:tag]; stored as <you>/name:tag."),
    ] = None,
    file: Annotated[
        str, typer.Option("--file", "-f", help="Dockerfile path inside the context.")
    ] = "Dockerfile",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the image.")] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Build an image on the cluster's nodes from a build context."""
    with client(url, token) as api:
        started = call(api.build, context, tag, file)
        result = follow_build(api, started, quiet=quiet or json_out)
    succeeded = result["state"] == "succeeded"
    render.emit(
        {**result, "lines": None}, json_out, lambda r: str(r["image"]) if succeeded else None
    )
    if not succeeded:
        fail(f"build {result['id']} failed: {result['error'] or result['state']}")
