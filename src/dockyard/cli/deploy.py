"""``dockyard deploy -f compose.yaml`` and ``dockyard apply -f spec.yaml``.

Both validate every service before creating any. ``deploy`` converts a Compose
file (``core/compose.py``; key by key in docs/compose.md) into services named
``STACK_service`` labelled ``dockyard.stack=STACK``; if the server refuses one
(its container policy answers 403 with the rule), the services this deploy
created are removed and the ones it changed are put back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from dockyard.cli import render
from dockyard.cli.app import JsonOpt, TokenOpt, UrlOpt, app, client, fail
from dockyard.cli.build import build_image
from dockyard.cli.specfile import SpecFileError, load_documents, read_text
from dockyard.client import Client, ClientError
from dockyard.core.compose import (
    STACK_LABEL,
    ComposeError,
    Note,
    convert,
    default_stack,
    policy_keys,
    validate_body,
)
from dockyard.core.compose_merge import merge_files
from dockyard.core.compose_secrets import ValueSource
from dockyard.core.compose_text import Interpolator, parse_env_lines
from dockyard.core.errors import ValidationError
from dockyard.core.secrets import FileKind

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


@dataclass
class Applied:
    name: str
    action: str  # created | unchanged | scaled | rolling
    previous: dict[str, Any] | None = None  # the spec it had before (for a revert)


def find_compose_file(path: Path | None) -> Path:
    if path is not None:
        return path
    for name in COMPOSE_NAMES:
        if Path(name).exists():
            return Path(name)
    fail(f"no {' or '.join(COMPOSE_NAMES[:2])} here: give the file with -f")


def compose_environ(directory: Path) -> dict[str, str]:
    """Variables for interpolation: the project's ``.env``, overridden by the shell's."""
    environ = dict(os.environ)
    dotenv = directory / ".env"
    if not dotenv.is_file():
        return environ
    values = parse_env_lines(read_text(dotenv), Interpolator(environ), str(dotenv))
    return {**values, **environ}


def describe(exc: ClientError) -> str:
    where = f"{exc.field}: " if exc.field else ""
    if exc.status == 403 and exc.code == "policy":
        return f"refused by your container policy: {where}{exc} (see docs/security.md)"
    return f"{where}{exc}"


def apply_one(api: Client, body: dict[str, Any]) -> Applied:
    """Create the service, or update it when it exists (remembering its old spec)."""
    name = str(body["name"])
    try:
        previous = api.service(name)
    except ClientError as exc:
        if exc.status != 404:
            raise
        api.create_service(body)
        return Applied(name, "created")
    out = api.update_service(name, body)
    return Applied(name, str(out.get("change") or "updated"), dict(previous.get("spec") or {}))


def undo(api: Client, done: Sequence[Applied]) -> list[str]:
    """Remove the services created and restore the ones changed; what happened to each."""
    lines: list[str] = []
    for item in reversed(done):
        try:
            if item.action == "created":
                api.remove_service(item.name)
                lines.append(f"removed {item.name} (created by this run)")
            elif item.action != "unchanged" and item.previous:
                api.update_service(item.name, item.previous)
                lines.append(f"restored {item.name} to its previous spec")
        except ClientError as exc:
            lines.append(f"could not undo {item.name}: {exc}")
    return lines


def print_notes(notes: Sequence[Note], style: str, label: str) -> None:
    for note in notes:
        render.err_console.print(f"[{style}]{label}:[/] {escape(str(note))}")


def refuse(message: str, json_out: bool, refusals: Sequence[Note] = ()) -> NoReturn:
    if json_out:
        render.print_json({"error": message, "refusals": [n.to_dict() for n in refusals]})
    print_notes(refusals, "red", "refused")
    fail(message)


def report(
    stack: str | None, done: Sequence[Applied], warnings: Sequence[Note], json_out: bool
) -> None:
    out: dict[str, Any] = {
        "services": [{"name": a.name, "action": a.action} for a in done],
        "warnings": [n.to_dict() for n in warnings],
    }
    if stack is not None:
        out["stack"] = stack
    render.emit(
        out,
        json_out,
        lambda _: render.table(["SERVICE", "ACTION"], [[a.name, a.action] for a in done]),
    )


def apply_all(
    api: Client,
    bodies: Sequence[dict[str, Any]],
    json_out: bool,
    labels: Sequence[str],
    before: Callable[[dict[str, Any]], None] = lambda _: None,
) -> list[Applied]:
    """Apply in order (``before`` each: e.g. wait for its dependencies); on an error,
    undo this run's changes and exit non-zero."""
    done: list[Applied] = []
    for body, label in zip(bodies, labels, strict=True):
        try:
            before(body)
            done.append(apply_one(api, body))
        except ClientError as exc:
            undone = undo(api, done)
            for line in undone:
                render.err_console.print(escape(line))
            suffix = "this run's changes were undone" if done else "nothing was changed"
            refuse(f"{label}: {describe(exc)} ({suffix})", json_out)
    return done


stack_app = typer.Typer(help="Compose stacks: deploy, ls, rm.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


@app.command()
@stack_app.command("deploy")
def deploy(
    file: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            "-f",
            help="The Compose file (default: ./compose.yaml ...); several are merged in order.",
        ),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option("--profile", help="Also deploy the services of this profile (repeatable)."),
    ] = None,
    wait_timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for each depends_on condition before giving up."),
    ] = 300.0,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", "-n", help="Stack name (default: top-level name: or the directory)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the services it would create; create none.")
    ] = False,
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Deploy a Compose file as services STACK_<service> (re-run to update them)."""
    paths = list(file or []) or [find_compose_file(None)]
    path = paths[0]
    docs: list[Any] = []
    try:
        for each in paths:
            found = load_documents(each)
            if len(found) != 1:
                fail(f"{each}: expected one YAML document, found {len(found)}")
            docs.extend(found)
        directory = path.resolve().parent
        environ = compose_environ(directory)
    except SpecFileError as exc:
        fail(str(exc))
    doc = merge_files(docs)
    try:
        stack = default_stack(doc if isinstance(doc, Mapping) else {}, directory.name, name)
        result = convert(
            doc,
            stack=stack,
            base_dir=str(directory),
            environ=environ,
            read_file=_read,
            profiles=profile or (),
        )
    except ComposeError as exc:
        refuse(f"{path}: cannot deploy; nothing was created", json_out, exc.refusals)
    except ValidationError as exc:
        fail(f"{path}: {exc}")
    if not json_out:
        print_notes(result.warnings, "yellow", "warning")
        for body in result.payloads:
            if keys := policy_keys(body):
                render.err_console.print(
                    f"[cyan]policy:[/] {escape(body['name'])} asks for {', '.join(keys)}: "
                    "refused (403) unless you are an admin or your container policy allows it"
                )
    if dry_run:
        checked = server_checks(url, token, result.payloads, json_out, result.values)
        render.print_json(
            {
                "stack": stack,
                "services": result.payloads,
                "builds": dict(result.builds),
                **{  # names only: values are never printed
                    kind.plural: [v.name for v in result.values if v.kind is kind]
                    for kind in FileKind
                },
                "warnings": [n.to_dict() for n in result.warnings],
                "server_checked": checked,
            }
        )
        return
    # Dependencies first (depends_on); else bodies the container policy checks go
    # first: a refusal then comes before anything else was created.
    bodies = start_order(result.payloads, result.depends)
    values = read_values(result.values, json_out)
    with client(url, token) as api:
        for body in bodies:  # build: through the cluster's builder, in your namespace
            if build := result.builds.get(body["name"]):
                body["image"] = build_image(
                    api,
                    Path(build["context"]),
                    build["tag"],
                    build["dockerfile"],
                    quiet=json_out,
                )
        stored = store_values(api, values, json_out, stack)  # before the services using them
        try:
            done = apply_all(
                api,
                bodies,
                json_out,
                [f"service {b['name']}" for b in bodies],
                lambda body: wait_for_dependencies(
                    api, result.depends.get(body["name"], ()), wait_timeout
                ),
            )
        except (typer.Exit, SystemExit):
            unstore(api, stored)
            raise
    report(stack, done, result.warnings, json_out)


def read_values(sources: Sequence[ValueSource], json_out: bool) -> list[tuple[ValueSource, bytes]]:
    """The secrets' and configs' values from their files (or the environment)."""
    out = []
    for source in sources:
        if source.text is not None:
            out.append((source, source.text.encode()))
            continue
        try:
            out.append((source, Path(source.path).read_bytes()))
        except OSError as exc:
            refuse(
                f"{source.kind.value} {source.name}: cannot read {source.path}: "
                f"{exc.strerror}; nothing was created",
                json_out,
            )
    return out


def store_values(
    api: Client, values: Sequence[tuple[ValueSource, bytes]], json_out: bool, stack: str
) -> list[ValueSource]:
    """Store (or replace) each value before the services, labelled with the stack
    (``stack rm`` removes them); those this run created. On an error the ones created
    are removed and the deploy stops."""
    created: list[ValueSource] = []
    for source, data in values:
        try:
            out = api.create_secret(
                source.name,
                data,
                kind=source.kind.value,
                replace=True,
                labels={STACK_LABEL: stack},
            )
        except ClientError as exc:
            unstore(api, created)
            refuse(
                f"{source.kind.value} {source.name}: {describe(exc)} "
                "(this run's secrets were removed)",
                json_out,
            )
        if out.get("created"):
            created.append(source)
    return created


def unstore(api: Client, created: Sequence[ValueSource]) -> None:
    """Remove the secrets and configs this run created (a failed deploy)."""
    for source in reversed(created):
        try:
            api.remove_secret(source.name, kind=source.kind.value)
            render.err_console.print(
                escape(f"removed {source.kind.value} {source.name} (created by this run)")
            )
        except ClientError as exc:
            render.err_console.print(escape(f"could not remove {source.name}: {exc}"))


def server_checks(
    url: str | None,
    token: str | None,
    bodies: Sequence[dict[str, Any]],
    json_out: bool,
    values: Sequence[ValueSource] = (),
) -> bool:
    """The server's own checks of every body (fields, your container policy, image
    namespaces: POST /api/v1/services/check, nothing created); a refusal exits 1 like
    the deploy would. False when no server answered (only the local checks were made)."""
    refusals: list[Note] = []
    try:
        with client(url, token) as api:
            for body in bodies:
                try:
                    api.check_service(
                        body,
                        secrets=[v.name for v in values if v.kind is FileKind.SECRET],
                        configs=[v.name for v in values if v.kind is FileKind.CONFIG],
                    )
                except ClientError as exc:
                    if exc.status in (0, 401) or exc.status >= 500:
                        raise
                    short = str(body["name"]).split("_", 1)[-1]
                    refusals.append(Note(short, exc.field or "(service)", describe(exc)))
    except ClientError as exc:
        render.err_console.print(
            f"[yellow]warning:[/] the server's checks were not made ({exc}); local checks only"
        )
        return False
    if refusals:
        refuse("the server would refuse this deploy; nothing was created", json_out, refusals)
    return True


def start_order(
    bodies: Sequence[dict[str, Any]], depends: Mapping[str, Sequence[tuple[str, str]]]
) -> list[dict[str, Any]]:
    """A service after those it depends on; among the ready ones, those the container
    policy checks first. A cycle is refused."""
    pending = sorted(bodies, key=lambda b: not policy_keys(b))
    names = {b["name"] for b in bodies}
    placed: set[str] = set()
    out: list[dict[str, Any]] = []
    while pending:
        ready = [
            b
            for b in pending
            if all(d in placed or d not in names for d, _ in depends.get(b["name"], ()))
        ]
        if not ready:
            fail("depends_on: " + ", ".join(b["name"] for b in pending) + " depend on each other")
        out.append(ready[0])
        placed.add(ready[0]["name"])
        pending.remove(ready[0])
    return out


def wait_for_dependencies(api: Client, depends: Sequence[tuple[str, str]], timeout: float) -> None:
    """Wait until each dependency meets its condition: ``service_started``, a replica
    runs; ``service_healthy``, every wanted replica is ready;
    ``service_completed_successfully``, its (run-once) replica exited 0. ClientError on
    time out, and (``dependency_failed``) when that replica ended otherwise."""
    for name, condition in depends:
        deadline = time.monotonic() + timeout
        while True:
            svc = api.service(name)
            detail = svc.get("replicas_detail") or []
            if condition == "service_completed_successfully":
                met = completed(api, svc)
            elif condition == "service_healthy":
                met = len(detail) >= int(svc.get("replicas") or 0) and all(
                    r.get("ready") for r in detail
                )
            else:
                met = any(r.get("state") == "running" for r in detail) or not svc.get("replicas")
            if met:
                break
            if time.monotonic() > deadline:
                raise ClientError(
                    f"{name} did not become {condition.removeprefix('service_')} "
                    f"within {timeout:g}s (depends_on)",
                    status=0,
                )
            time.sleep(0.5)


TERMINAL = ("succeeded", "failed", "killed", "lost", "expired")


def completed(api: Client, svc: dict[str, Any]) -> bool:
    """True once the service's newest ended replica succeeded (exit 0); ClientError
    ``dependency_failed`` (naming its state, exit code and reason) when it ended
    otherwise: the dependant is not started."""
    ended = [
        t
        for t in api.tasks(q=str(svc["name"]))
        if t["workload_id"] == svc["id"] and t["state"] in TERMINAL
    ]
    if not ended:
        return False
    last = max(ended, key=lambda t: float(t.get("created_at") or 0))
    if last["state"] == "succeeded":
        return True
    raise ClientError(
        f"{svc['name']} did not complete successfully: {last['state']} "
        f"(exit {last.get('exit_code')}, {last.get('reason') or 'no reason'}); "
        "its dependants are not started (depends_on)",
        status=0,
        code="dependency_failed",
    )


@stack_app.command("ls")
def stack_ls(json_out: JsonOpt = False, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Stacks: their services and how many replicas are ready."""
    with client(url, token) as api:
        services = api.services()
    stacks: dict[str, dict[str, Any]] = {}
    for svc in services:
        stack = (svc.get("labels") or (svc.get("spec") or {}).get("labels") or {}).get(STACK_LABEL)
        if not stack:
            continue
        entry = stacks.setdefault(
            stack, {"stack": stack, "services": [], "ready": 0, "replicas": 0}
        )
        entry["services"].append(svc["name"])
        entry["ready"] += int(svc.get("ready") or 0)
        entry["replicas"] += int(svc.get("replicas") or 0)
    rows = sorted(stacks.values(), key=lambda e: str(e["stack"]))
    render.emit(
        rows,
        json_out,
        lambda _: render.table(
            ["STACK", "SERVICES", "READY"],
            [[e["stack"], str(len(e["services"])), f"{e['ready']}/{e['replicas']}"] for e in rows],
        ),
    )


@stack_app.command("rm")
def stack_rm(
    stack: Annotated[str, typer.Argument(help="The stack's name.")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Remove every service of the stack, then the secrets and configs its deploys
    stored (yours, labelled with the stack)."""
    with client(url, token) as api:
        names = [
            svc["name"]
            for svc in api.services()
            if (svc.get("labels") or (svc.get("spec") or {}).get("labels") or {}).get(STACK_LABEL)
            == stack
        ]
        if not names:
            fail(f"no stack {stack!r}")
        for each in names:
            api.remove_service(each)
        values = remove_stack_values(api, stack)
    render.emit(
        {"stack": stack, "removed": names, "removed_values": values},
        json_out,
        lambda _: render.console.print(f"removed {', '.join(names)}"),
    )


def remove_stack_values(api: Client, stack: str) -> list[str]:
    """Remove your secrets and configs labelled with the stack; their names."""
    me = str(api.whoami().get("name"))
    removed: list[str] = []
    for kind in FileKind:
        for value in api.secrets(kind.value):
            if value["owner"] != me or value["labels"].get(STACK_LABEL) != stack:
                continue
            try:
                api.remove_secret(value["name"], kind.value)
                removed.append(f"{kind.value} {value['name']}")
            except ClientError as exc:  # mounted by another live service of yours
                what = f"{kind.value} {value['name']}: {exc}"
                render.err_console.print(f"[yellow]warning:[/] kept {escape(what)}")
    return removed


@app.command()
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="A .yaml/.yml/.json spec file.")],
    json_out: JsonOpt = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create or update services from ServiceCreate documents (one, a list, or a
    YAML stream); all are checked before any is applied."""
    try:
        docs = load_documents(file)
    except SpecFileError as exc:
        fail(str(exc))
    bodies: list[dict[str, Any]] = []
    for doc in docs:
        bodies.extend(doc if isinstance(doc, list) else [doc])
    if not bodies:
        fail(f"{file}: no documents")
    labels: list[str] = []
    for index, body in enumerate(bodies, start=1):
        label = f"document {index}"
        if not isinstance(body, dict):
            fail(f"{label}: must be a mapping of ServiceCreate fields (see docs/services.md)")
        for key in ("name", "image"):
            if not isinstance(body.get(key), str) or not body[key]:
                fail(f"{label}: {key}: is required")
        label = f"{label} ({body['name']})"
        try:
            validate_body(body)
        except ValidationError as exc:
            fail(f"{label}: {exc}. Nothing was applied.")
        labels.append(label)
    names = [b["name"] for b in bodies]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        fail(f"{file}: {', '.join(twice)} appear(s) more than once")
    with client(url, token) as api:
        done = apply_all(api, bodies, json_out, labels)
    report(None, done, [], json_out)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()
