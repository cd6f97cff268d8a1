"""Compose files to dockyard services (``dockyard deploy -f compose.yaml``). Pure.

:func:`convert` takes a parsed Compose document and returns one ``ServiceCreate``
body per Compose service plus the warnings (keys ignored); anything it cannot
honour safely is a refusal, and every refusal of every service is raised
together as :class:`ComposeError` before anything is created. Reading
``env_file`` files is injected (``read_file``). The key-by-key handling is
documented in ``docs/compose.md``; ``KEY_HANDLING`` below is the same table.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dockyard.core.compose_secrets import Definitions, ValueSource, definitions, service_refs
from dockyard.core.compose_text import Interpolator, parse_duration, parse_env_lines, parse_ports
from dockyard.core.errors import ValidationError
from dockyard.core.networks import NetworkRef
from dockyard.core.secrets import FileKind
from dockyard.core.security import DOCKER_SOCKETS
from dockyard.core.services import build_service_spec
from dockyard.core.specs import build_job_spec, validate_name

STACK_LABEL = "dockyard.stack"
DEFAULT_HEALTH = {"interval_s": 30.0, "timeout_s": 30.0, "retries": 3, "start_period_s": 0.0}
_SECURITY_KEYS = ("privileged", "cap_add", "devices", "security_opt", "sysctls")
_NAMESPACE_KEYS = {"network_mode": "network_mode", "pid": "pid_mode", "ipc": "ipc_mode"}
_NAMESPACE_KEYS |= {"uts": "uts_mode", "userns_mode": "userns_mode"}
_CONSTRAINT_RE = re.compile(r"^node\.labels\.([^=!\s]+)\s*(==|!=)\s*(\S.*)$")

#: Service keys dockyard ignores, with why (each use is a warning).
IGNORED: dict[str, str] = {
    "container_name": "dockyard names containers itself",
    "links": "services reach each other by name on their networks already",
    "external_links": "only the stack's own services are reachable by name",
    "logging": "dockyard collects the logs (`dockyard logs`)",
    "hostname": "not supported",
    "domainname": "not supported",
    "dns": "not supported",
    "dns_search": "not supported",
    "dns_opt": "not supported",
    "extra_hosts": "not supported",
    "mac_address": "not supported",
    "stop_signal": "replicas are stopped with SIGTERM, then SIGKILL",
    "tty": "not supported",
    "stdin_open": "not supported",
    "working_dir": "the image's WORKDIR is used",
    "cap_drop": "containers keep Docker's default capabilities",
    "init": "dockyard always runs Docker's init",
    "read_only": "not supported",
    "shm_size": "not supported",
    "tmpfs": "not supported",
    "ulimits": "not supported",
    "pids_limit": "dockyard sets its own pids limit",
    "platform": "the node's platform is used",
    "pull_policy": "images are pulled when missing",
    "runtime": "GPUs come from `gpus` / deploy.resources",
    "cpu_shares": "use deploy.resources.limits.cpus",
    "cpu_quota": "use deploy.resources.limits.cpus",
    "cpu_period": "use deploy.resources.limits.cpus",
    "cpu_rt_runtime": "not supported",
    "cpu_rt_period": "not supported",
    "cpu_count": "use deploy.resources.limits.cpus",
    "cpu_percent": "use deploy.resources.limits.cpus",
    "cpuset": "not supported",
    "mem_swappiness": "not supported",
    "memswap_limit": "swap is limited to the memory limit",
    "oom_kill_disable": "not supported",
    "oom_score_adj": "not supported",
    "blkio_config": "not supported",
    "group_add": "not supported",
    "annotations": "not supported",
    "attach": "not supported",
    "cgroup": "not supported",
    "cgroup_parent": "not supported",
    "isolation": "not supported",
    "storage_opt": "not supported",
    "device_cgroup_rules": "not supported",
    "credential_spec": "not supported",
    "develop": "not supported",
    "post_start": "not supported",
    "pre_stop": "not supported",
    "label_file": "put the labels in `labels`",
}

#: Service keys that make the deploy fail (nothing is created), with why.
REFUSED: dict[str, str] = {
    "extends": "not supported: inline the extended service",
    "volumes_from": "not supported: replicas cannot share another container's volumes",
    "models": "not supported",
    "provider": "not supported",
}

#: Top-level keys and how they are handled.
TOP_LEVEL = ("version", "name", "services", "volumes", "networks", "secrets", "configs")


class Note(NamedTuple):
    """A warning or refusal about one key of one Compose service ("" for the file)."""

    service: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.service or '(file)'}: {self.key}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"service": self.service, "key": self.key, "message": self.message}


class ComposeError(ValidationError):
    """The file cannot be deployed; ``refusals`` lists every reason at once."""

    def __init__(self, refusals: Sequence[Note]) -> None:
        super().__init__("compose", "; ".join(str(n) for n in refusals))
        self.refusals = tuple(refusals)


_NO_DEPENDS: Mapping[str, list[tuple[str, str]]] = {}
_NO_BUILDS: Mapping[str, dict[str, str]] = {}
_NO_VALUES: tuple[ValueSource, ...] = ()


class ComposeResult(NamedTuple):
    """One ``ServiceCreate`` body per deployed service, and the warnings; ``depends``:
    service name -> [(name it depends on, condition)], for deploying in order
    (``service_started``, ``service_healthy``; both names are dockyard's)."""

    payloads: list[dict[str, Any]]
    warnings: list[Note]
    depends: Mapping[str, list[tuple[str, str]]] = _NO_DEPENDS
    #: Service name -> {context (absolute), dockerfile, tag}: built through the cluster's
    #: builder before the deploy (the body's image is then the built one).
    builds: Mapping[str, dict[str, str]] = _NO_BUILDS
    #: Secrets and configs the deploy stores before creating the services (values from
    #: files or the environment: never printed).
    values: tuple[ValueSource, ...] = _NO_VALUES


#: depends_on conditions: what the deploy waits for before starting the dependant.
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


ReadFile = Callable[[str], str]


@dataclass
class _Context:
    stack: str
    base_dir: str
    interpolator: Interpolator
    read_file: ReadFile | None
    volumes: Mapping[str, Any]
    networks: Mapping[str, Any] = field(default_factory=dict)
    services: frozenset[str] = frozenset()
    deployed: frozenset[str] = frozenset()
    warnings: list[Note] = field(default_factory=list)
    refusals: list[Note] = field(default_factory=list)
    depends: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: Services others wait for with ``service_completed_successfully``: run once.
    once: set[str] = field(default_factory=set)
    builds: dict[str, dict[str, str]] = field(default_factory=dict)
    files: Definitions = field(default_factory=Definitions)


def default_stack(doc: Mapping[str, Any], directory: str, override: str | None = None) -> str:
    """``--name``, else the file's top-level ``name:``, else its directory's name
    (lower-cased, other characters than letters, digits, ``_`` and ``-`` dropped)."""
    if override:
        return validate_name(override, "stack")
    if isinstance(doc.get("name"), str) and doc["name"]:
        return validate_name(doc["name"], "name")
    cleaned = re.sub(r"[^a-z0-9_-]", "", directory.lower()).lstrip("_-")
    return validate_name(cleaned or "default", "stack")


def convert(
    doc: Any,
    *,
    stack: str,
    base_dir: str,
    environ: Mapping[str, str] | None = None,
    read_file: ReadFile | None = None,
    profiles: Sequence[str] = (),
) -> ComposeResult:
    """Convert a parsed Compose document; raise :class:`ComposeError` listing every
    refusal. ``base_dir`` is the compose file's (absolute) directory; ``environ``
    the variables for interpolation; ``read_file`` reads ``env_file`` files;
    ``profiles`` the active profiles (else ``COMPOSE_PROFILES`` of ``environ``)."""
    validate_name(stack, "stack")
    if not isinstance(doc, Mapping):
        raise ComposeError([Note("", "(file)", "is not a mapping of Compose keys")])
    interpolator = Interpolator(dict(environ or {}))
    try:
        doc = interpolator.tree(doc, "")
    except ValidationError as exc:
        raise ComposeError([Note("", exc.field.lstrip(".") or "(file)", exc.message)]) from None
    services = doc.get("services")
    if not isinstance(services, Mapping) or not services:
        raise ComposeError([Note("", "services", "the file defines no services")])
    volumes = doc.get("volumes") or {}
    networks = doc.get("networks") or {}
    active = set(profiles) or {
        p.strip() for p in (environ or {}).get("COMPOSE_PROFILES", "").split(",") if p.strip()
    }
    skipped: list[Note] = []
    deployed = frozenset(
        str(n) for n, svc in services.items() if _enabled(svc, active, str(n), skipped)
    )
    ctx = _Context(
        stack,
        base_dir,
        interpolator,
        read_file,
        volumes if isinstance(volumes, Mapping) else {},
        networks if isinstance(networks, Mapping) else {},
        frozenset(str(n) for n in services),
        deployed,
    )
    ctx.warnings.extend(skipped)
    _top_level(doc, ctx)
    ctx.files = definitions(doc, stack, base_dir, environ or {})
    for key, message, refused in ctx.files.notes:
        (ctx.refusals if refused else ctx.warnings).append(Note("", key, message))
    payloads: list[dict[str, Any]] = []
    for name, service in services.items():
        if str(name) not in deployed:
            continue
        body = _Service(str(name), service, ctx).convert()
        if body is not None:
            payloads.append(body)
    for body in payloads:  # one-shot steps: a replica that ends is not replaced
        if body["name"] in ctx.once:
            body["run_once"] = True
    for var in sorted(interpolator.unset):
        ctx.warnings.append(Note("", f"${{{var}}}", "is not set: a blank string is used"))
    if ctx.refusals:
        raise ComposeError(ctx.refusals)
    return ComposeResult(payloads, ctx.warnings, ctx.depends, ctx.builds, tuple(ctx.files.values))


def _enabled(service: Any, active: set[str], name: str, warnings: list[Note]) -> bool:
    """A service without profiles always runs; one with profiles when one is active."""
    wanted = service.get("profiles") if isinstance(service, Mapping) else None
    if not wanted:
        return True
    if any(str(p) in active for p in wanted):
        return True
    warnings.append(Note(name, "profiles", f"not deployed: profiles {list(wanted)} are not active"))
    return False


def policy_keys(body: Mapping[str, Any]) -> list[str]:
    """The fields of a body that the server's container policy checks (403 for
    non-admins unless their policy allows them; see docs/security.md)."""
    keys = [k for k in (*_SECURITY_KEYS, *_NAMESPACE_KEYS.values()) if body.get(k)]
    if any(isinstance(m, Mapping) and m.get("kind") == "bind" for m in body.get("mounts") or ()):
        keys.append("mounts")
    return keys


def validate_body(body: Mapping[str, Any]) -> None:
    """The checks ``POST /api/v1/services`` makes on a body (without the policy)."""
    security = {
        k: body[k] for k in (*_SECURITY_KEYS, *_NAMESPACE_KEYS.values(), "user") if k in body
    }
    task = build_job_spec(
        name=body["name"],
        image=body["image"],
        command=body.get("command"),
        env=body.get("env"),
        cpu=body.get("cpu"),
        memory=body.get("memory"),
        kill_grace_s=body.get("kill_grace_s"),
        mounts=body.get("mounts"),
        security=security,
        constraints=body.get("constraints"),
        gpus=body.get("gpus"),
        algorithm="spread",
    )
    build_service_spec(
        task,
        replicas=body.get("replicas", 1),
        ports=body.get("ports") or (),
        health=body.get("health"),
        update=body.get("update"),
        labels=body.get("labels"),
        secrets=body.get("secrets"),
        configs=body.get("configs"),
    )


def _top_level(doc: Mapping[str, Any], ctx: _Context) -> None:
    for key, value in doc.items():
        key = str(key)
        if key.startswith("x-") or key in ("name", "services", "secrets", "configs"):
            continue
        if key == "version":
            ctx.warnings.append(Note("", key, "obsolete, ignored"))
        elif key == "networks":
            for net, spec in (value or {}).items() if isinstance(value, Mapping) else ():
                try:
                    NetworkRef.from_dict({"name": str(net)}, f"networks.{net}")
                except ValidationError as exc:
                    ctx.refusals.append(Note("", exc.field, exc.message))
                for opt, why in (
                    ("driver", "dockyard makes a bridge per node"),
                    ("driver_opts", "dockyard makes a bridge per node"),
                    ("ipam", "dockyard picks the subnets"),
                    ("external", "a stack network like the others (not shared with other stacks)"),
                    ("name", "networks are named by dockyard"),
                    ("attachable", "not supported"),
                    ("enable_ipv6", "IPv4 only"),
                    ("labels", "not supported"),
                ):
                    if isinstance(spec, Mapping) and spec.get(opt):
                        if opt == "driver" and spec[opt] in ("bridge", "overlay"):
                            continue
                        ctx.warnings.append(Note("", f"networks.{net}.{opt}", f"ignored: {why}"))
        elif key == "volumes":
            for vol, spec in (value or {}).items() if isinstance(value, Mapping) else ():
                for opt in ("driver", "driver_opts", "labels"):
                    if isinstance(spec, Mapping) and spec.get(opt):
                        ctx.warnings.append(
                            Note("", f"volumes.{vol}.{opt}", "ignored: local volumes on the node")
                        )
        elif key == "include":
            ctx.refusals.append(Note("", key, "not supported: merge the files into one"))
        else:
            ctx.refusals.append(Note("", key, "is not a Compose key"))


class _Service:
    """Converts one Compose service, recording warnings and refusals on ``ctx``."""

    def __init__(self, name: str, spec: Any, ctx: _Context) -> None:
        self.name = name
        self.spec: Mapping[str, Any] = spec if isinstance(spec, Mapping) else {}
        self.ctx = ctx
        self.body: dict[str, Any] = {}
        self.labels: dict[str, str] = {}
        self.ok = isinstance(spec, Mapping)

    def warn(self, key: str, message: str) -> None:
        self.ctx.warnings.append(Note(self.name, key, message))

    def refuse(self, key: str, message: str) -> None:
        self.ctx.refusals.append(Note(self.name, key, message))
        self.ok = False

    def convert(self) -> dict[str, Any] | None:
        if not self.ok:
            self.refuse("(service)", "must be a mapping of keys")
            return None
        full = f"{self.ctx.stack}_{self.name}"
        try:
            validate_name(full)
        except ValidationError as exc:
            self.refuse("(name)", f"{full!r} {exc.message}")
        self.body["name"] = full
        handlers: dict[str, Callable[[Any], None]] = {
            "image": self._image,
            "build": self._build,
            "command": lambda v: None,
            "entrypoint": lambda v: None,
            "environment": lambda v: None,
            "env_file": lambda v: None,
            "ports": self._ports,
            "expose": self._expose,
            "networks": lambda v: None,
            "depends_on": self._depends_on,
            "profiles": lambda v: None,
            "deploy": self._deploy,
            "scale": lambda v: None,
            "healthcheck": self._healthcheck,
            "restart": self._restart,
            "labels": lambda v: self.labels.update(self._labels(v, "labels")),
            "volumes": self._volumes,
            "user": lambda v: self._set("user", str(v)),
            "privileged": lambda v: self._set("privileged", bool(v)) if v else None,
            "cap_add": lambda v: self._set("cap_add", [str(c) for c in v or ()]),
            "devices": self._devices,
            "security_opt": lambda v: self._set("security_opt", [str(o) for o in v or ()]),
            "sysctls": lambda v: self._set("sysctls", self._labels(v, "sysctls")),
            "cpus": lambda v: None,
            "mem_limit": lambda v: None,
            "mem_reservation": lambda v: None,
            "gpus": self._gpus,
            "stop_grace_period": lambda v: self._set(
                "kill_grace_s", parse_duration(v, "stop_grace_period")
            ),
            "use_api_socket": self._api_socket,
            "secrets": lambda v: self._set(
                "secrets", service_refs(FileKind.SECRET, v, self.ctx.files)
            ),
            "configs": lambda v: self._set(
                "configs", service_refs(FileKind.CONFIG, v, self.ctx.files)
            ),
            **{key: self._namespace(key) for key in _NAMESPACE_KEYS},
        }
        for key, value in self.spec.items():
            key = str(key)
            try:
                if key in handlers:
                    handlers[key](value)
                elif key in IGNORED:
                    self.warn(key, f"ignored: {IGNORED[key]}")
                elif key in REFUSED:
                    self.refuse(key, REFUSED[key])
                elif not key.startswith("x-"):
                    self.refuse(key, "is not a Compose service key")
            except ValidationError as exc:
                self.refuse(key, exc.message)
            except (TypeError, ValueError, AttributeError):
                self.refuse(key, f"cannot read {value!r}")
        if "image" not in self.spec and "build" not in self.spec:
            self.refuse("image", "is required")
        for key, step in (
            ("command", self._command),
            ("environment", self._environment),
            ("deploy.replicas", self._replicas),
            ("deploy.resources", self._resources),
            ("networks", self._networks),
        ):
            try:
                step()
            except ValidationError as exc:
                self.refuse(exc.field or key, exc.message)
            except (TypeError, ValueError, AttributeError) as exc:
                self.refuse(key, f"cannot read it: {exc}")
        self.body["labels"] = {**self.labels, STACK_LABEL: self.ctx.stack}
        if not self.ok:
            return None
        try:
            validate_body(self.body)
        except ValidationError as exc:
            self.refuse(exc.field, exc.message)
            return None
        return self.body

    def _set(self, key: str, value: Any) -> None:
        if value or value == 0:
            self.body[key] = value

    # -- image, command, environment --------------------------------------------
    def _image(self, value: Any) -> None:
        if "build" not in self.spec:
            self.body["image"] = str(value)

    def _build(self, value: Any) -> None:
        """Built by the cluster's builder (in the owner's namespace) before the deploy."""
        spec = {"context": value} if isinstance(value, str) else value
        if not isinstance(spec, Mapping):
            raise ValidationError("build", "must be a context path or a mapping")
        context = str(spec.get("context") or ".")
        if "://" in context or context.startswith("git@"):
            self.refuse("build.context", f"{context}: only a local directory can be built")
            return
        if spec.get("dockerfile_inline"):
            self.refuse("build.dockerfile_inline", "not supported: put it in a Dockerfile")
            return
        for key in spec:
            if key not in ("context", "dockerfile"):
                self.warn(f"build.{key}", "ignored: not supported by the cluster's builder")
        tag = re.sub(r"[^a-z0-9_.-]", "", f"{self.ctx.stack}_{self.name}".lower()) + ":latest"
        self.ctx.builds[f"{self.ctx.stack}_{self.name}"] = {
            "context": self._host_path(context),
            "dockerfile": str(spec.get("dockerfile") or "Dockerfile"),
            "tag": tag,
        }
        if "image" in self.spec:
            self.warn("build", f"built as your {tag} (not named {self.spec['image']})")
        self.body["image"] = tag

    def _command(self) -> None:
        command = _args(self.spec.get("command"), "command")
        if "entrypoint" in self.spec:
            entrypoint = _args(self.spec.get("entrypoint"), "entrypoint")
            if not entrypoint:
                self.warn("entrypoint", "ignored: dockyard cannot clear the image's ENTRYPOINT")
            else:
                self.warn(
                    "entrypoint",
                    "run as the start of the command: dockyard cannot replace the image's "
                    "ENTRYPOINT (fine for images without one)",
                )
            command = entrypoint + command
        if command:
            self.body["command"] = command

    def _environment(self) -> None:
        env: dict[str, str] = {}
        files = self.spec.get("env_file")
        for entry in [files] if isinstance(files, str | Mapping) else list(files or ()):
            path, required = (
                (str(entry.get("path")), bool(entry.get("required", True)))
                if isinstance(entry, Mapping)
                else (str(entry), True)
            )
            env.update(self._env_file(path, required))
        raw = self.spec.get("environment")
        if isinstance(raw, Mapping):
            for key, value in raw.items():
                if value is None:
                    if str(key) in self.ctx.interpolator.environ:
                        env[str(key)] = self.ctx.interpolator.environ[str(key)]
                else:
                    env[str(key)] = _scalar(value)
        else:
            for item in raw or ():
                key, sep, value = str(item).partition("=")
                if sep:
                    env[key] = value
                elif key in self.ctx.interpolator.environ:
                    env[key] = self.ctx.interpolator.environ[key]
        if env:
            self.body["env"] = env

    def _env_file(self, path: str, required: bool) -> dict[str, str]:
        full = self._host_path(path)
        if self.ctx.read_file is None:
            raise ValidationError("env_file", f"{path}: cannot read files here")
        try:
            text = self.ctx.read_file(full)
        except OSError as exc:
            if not required:
                return {}
            raise ValidationError(
                "env_file", f"cannot read {full}: {exc.strerror or exc}"
            ) from None
        return parse_env_lines(text, self.ctx.interpolator, f"env_file {path}")

    def _host_path(self, path: str) -> str:
        home = self.ctx.interpolator.environ.get("HOME", "")
        if (path == "~" or path.startswith("~/")) and home:
            path = home + path[1:]
        return posixpath.normpath(posixpath.join(self.ctx.base_dir, path))

    # -- ports, replicas, resources -----------------------------------------------
    def _ports(self, value: Any) -> None:
        ports: list[int] = list(self.body.get("ports") or ())
        udp: list[int] = list(self.body.get("udp_ports") or ())
        for index, entry in enumerate(value or ()):
            for port in parse_ports(entry, f"ports[{index}]"):
                if port.protocol not in ("tcp", "udp"):
                    self.refuse("ports", f"{port.target}/{port.protocol}: TCP or UDP only")
                    continue
                if port.protocol == "udp" and port.target not in udp:
                    udp.append(port.target)
                if port.published or port.host_ip:
                    self.warn(
                        "ports",
                        f"{port.target}: host side {port.host_ip + ':' if port.host_ip else ''}"
                        f"{port.published} not honoured: dockyard allocates the host port",
                    )
                if port.target not in ports:
                    ports.append(port.target)
        if ports:
            self.body["ports"] = ports
        if udp:
            self.body["udp_ports"] = udp

    def _expose(self, value: Any) -> None:
        """Reachable by name on the stack's networks; like every service port it is
        also published on the node address (that is how other nodes reach it)."""
        ports: list[int] = list(self.body.get("ports") or ())
        udp: list[int] = list(self.body.get("udp_ports") or ())
        for index, entry in enumerate(value or ()):
            text, _, proto = str(entry).partition("/")
            for port in parse_ports(text, f"expose[{index}]"):
                if port.target not in ports:
                    ports.append(port.target)
                if proto == "udp" and port.target not in udp:
                    udp.append(port.target)
        if ports:
            self.body["ports"] = ports
        if udp:
            self.body["udp_ports"] = udp

    # -- networks and order ---------------------------------------------------------
    def _networks(self) -> None:
        """The service's networks: those it lists (with its aliases), else ``default``;
        it answers to its Compose name on each."""
        value = self.spec.get("networks")
        entries: dict[str, Any]
        if value is None:
            entries = {"default": None}
        elif isinstance(value, Mapping):
            entries = {str(k): v for k, v in value.items()}
        elif isinstance(value, list):
            entries = {str(k): None for k in value}
        else:
            raise ValidationError("networks", "must be a list or a mapping of networks")
        refs: list[dict[str, Any]] = []
        for net, options in entries.items():
            where = f"networks.{net}"
            if net != "default" and net not in self.ctx.networks:
                self.refuse(where, f"network {net!r} is not declared under top-level networks")
                continue
            declared = self.ctx.networks.get(net) or {}
            aliases = [self.name]
            if isinstance(options, Mapping):
                aliases += [str(a) for a in options.get("aliases") or ()]
                for opt in options:
                    if opt != "aliases":
                        self.warn(f"{where}.{opt}", "ignored: dockyard assigns the addresses")
            refs.append(
                {
                    "name": net,
                    "internal": bool(isinstance(declared, Mapping) and declared.get("internal")),
                    "aliases": list(dict.fromkeys(aliases)),
                }
            )
        self.body["networks"] = refs

    def _depends_on(self, value: Any) -> None:
        entries: dict[str, Any]
        if isinstance(value, Mapping):
            entries = {str(k): v for k, v in value.items()}
        elif isinstance(value, list):
            entries = {str(k): None for k in value}
        else:
            raise ValidationError("depends_on", "must be a list or a mapping of services")
        deps: list[tuple[str, str]] = []
        for dep, options in entries.items():
            where = f"depends_on.{dep}"
            condition = "service_started"
            required = True
            if isinstance(options, Mapping):
                condition = str(options.get("condition") or condition)
                required = bool(options.get("required", True))
                for opt in options:
                    if opt not in ("condition", "required", "restart"):
                        self.warn(f"{where}.{opt}", "ignored: not supported")
            if condition not in CONDITIONS:
                self.refuse(where, f"condition {condition!r} is not one of {', '.join(CONDITIONS)}")
                continue
            if dep not in self.ctx.services:
                self.refuse(where, f"no service {dep!r} in this file")
                continue
            if dep not in self.ctx.deployed:
                if required:
                    self.refuse(where, f"{dep} is not deployed (its profiles are not active)")
                continue
            if condition == "service_completed_successfully":
                self.ctx.once.add(f"{self.ctx.stack}_{dep}")  # it runs once (run_once)
            deps.append((f"{self.ctx.stack}_{dep}", condition))
        if deps:
            self.ctx.depends[f"{self.ctx.stack}_{self.name}"] = deps

    def _replicas(self) -> None:
        deploy = self.spec.get("deploy") or {}
        replicas = deploy.get("replicas") if isinstance(deploy, Mapping) else None
        scale = self.spec.get("scale")
        if replicas is not None and scale is not None and replicas != scale:
            self.refuse("scale", f"{scale} contradicts deploy.replicas {replicas}")
        count = _whole(replicas if replicas is not None else scale)
        if count is None:
            self.body["replicas"] = 1
        elif isinstance(count, int):
            self.body["replicas"] = count
        else:
            self.refuse("deploy.replicas" if replicas is not None else "scale", "must be a number")

    def _resources(self) -> None:
        deploy = self.spec.get("deploy") or {}
        resources = (deploy.get("resources") or {}) if isinstance(deploy, Mapping) else {}
        limits = resources.get("limits") or {}
        reservations = resources.get("reservations") or {}
        for key, compose_limit, compose_reserve, field_name in (
            ("cpus", self.spec.get("cpus"), None, "cpu"),
            ("memory", self.spec.get("mem_limit"), self.spec.get("mem_reservation"), "memory"),
        ):
            limit = limits.get(key, compose_limit)
            reserve = reservations.get(key, compose_reserve)
            if limit is not None and reserve is not None and str(limit) != str(reserve):
                self.warn(
                    f"deploy.resources.reservations.{key}",
                    f"ignored: dockyard reserves what it limits ({limit})",
                )
            value = limit if limit is not None else reserve
            if value is not None:
                self.body[field_name] = float(value) if key == "cpus" else _size(value)
        if "cpu" not in self.body and "memory" not in self.body:
            self.warn("deploy.resources", "none given: dockyard's defaults apply (0.1 CPU, 128m)")
        for key in limits:
            if key not in ("cpus", "memory"):
                self.warn(f"deploy.resources.limits.{key}", "ignored: not supported")
        for key, value in reservations.items():
            if key == "devices":
                self._gpu_devices(value, "deploy.resources.reservations.devices")
            elif key not in ("cpus", "memory"):
                self.warn(f"deploy.resources.reservations.{key}", "ignored: not supported")

    def _gpus(self, value: Any) -> None:
        if value == "all":
            self.refuse("gpus", "`all` is not supported: give a count")
        else:
            self._gpu_devices(value, "gpus")

    def _gpu_devices(self, devices: Any, key: str) -> None:
        for device in devices or ():
            caps = [str(c) for c in device.get("capabilities") or ()]
            if "gpu" not in caps:
                self.refuse(key, f"capabilities {caps}: only GPUs are supported")
                continue
            count, ids = _whole(device.get("count")), device.get("device_ids")
            if ids:
                self.warn(key, "device_ids ignored: the scheduler picks the GPUs (count kept)")
                count = len(ids)
            if count == "all" or count is None:
                self.refuse(key, "count `all` is not supported: give a number of GPUs")
                continue
            if not isinstance(count, int):
                self.refuse(key, f"count {count!r} must be a number")
                continue
            if device.get("driver") not in (None, "nvidia"):
                self.warn(key, f"driver {device.get('driver')} ignored: nodes' GPUs are used")
            self.body["gpus"] = self.body.get("gpus", 0) + count

    # -- deploy -------------------------------------------------------------------
    def _deploy(self, value: Any) -> None:
        for key, sub in (value or {}).items():
            where = f"deploy.{key}"
            if key in ("replicas", "resources"):
                continue  # _replicas, _resources
            if key == "mode":
                if sub != "replicated":
                    self.refuse(where, f"{sub} is not supported: replicated only")
            elif key == "labels":
                self.labels.update(self._labels(sub, where))
            elif key == "update_config":
                self._update(sub)
            elif key == "restart_policy":
                condition = (sub or {}).get("condition", "any")
                for opt in sub or {}:
                    if opt != "condition":
                        self.warn(f"{where}.{opt}", "ignored: replicas restart with back-off")
                if condition != "any":
                    self.warn(f"{where}.condition", f"{condition}: services always restart")
            elif key == "placement":
                self._placement(sub)
            elif key in ("rollback_config", "endpoint_mode"):
                self.warn(where, "ignored: not supported")
            else:
                self.refuse(where, "is not a Compose deploy key")

    def _update(self, config: Mapping[str, Any]) -> None:
        update: dict[str, Any] = {}
        for key, value in (config or {}).items():
            where = f"deploy.update_config.{key}"
            if key == "parallelism":
                update["max_parallel"] = _whole(value) or 1000  # 0: all at once
            elif key == "order":
                update["order"] = str(value)
            elif key == "failure_action":
                update["auto_revert"] = value == "rollback"
                if value != "rollback":
                    self.warn(where, f"{value}: a failed update is not reverted (nor paused)")
            else:
                self.warn(where, "ignored: not supported")
        if update:
            self.body["update"] = update

    def _placement(self, placement: Mapping[str, Any]) -> None:
        constraints: list[str] = []
        for key, value in (placement or {}).items():
            where = f"deploy.placement.{key}"
            if key != "constraints":
                self.warn(where, "ignored: not supported")
                continue
            for text in value or ():
                match = _CONSTRAINT_RE.match(str(text).strip())
                if match is None:
                    self.warn(where, f"{text!r} ignored: only node.labels.KEY==/!=VALUE")
                    continue
                op = "=" if match.group(2) == "==" else "!="
                constraints.append(f"{match.group(1)}{op}{match.group(3).strip()}")
        if constraints:
            self.body["constraints"] = constraints

    # -- health and restart ---------------------------------------------------------
    def _healthcheck(self, value: Any) -> None:
        check = value or {}
        test = check.get("test")
        if check.get("disable") or test in (["NONE"], "NONE"):
            return
        if test is None:
            self.warn("healthcheck", "ignored: no test (the image's HEALTHCHECK is not run)")
            return
        if isinstance(test, str):
            command = ["sh", "-c", test]
        elif test and test[0] == "CMD" and len(test) > 1:
            command = [str(a) for a in test[1:]]
        elif test and test[0] == "CMD-SHELL" and len(test) == 2:
            command = ["sh", "-c", str(test[1])]
        else:
            raise ValidationError("healthcheck.test", f"{test!r}: use CMD, CMD-SHELL or a string")
        health: dict[str, Any] = {"kind": "cmd", "command": command, **DEFAULT_HEALTH}
        for key, field_name in (
            ("interval", "interval_s"),
            ("timeout", "timeout_s"),
            ("start_period", "start_period_s"),
        ):
            if key in check:
                health[field_name] = parse_duration(check[key], f"healthcheck.{key}")
        if "retries" in check:
            health["retries"] = _whole(check["retries"])
        for key in check:
            if key not in ("test", "interval", "timeout", "start_period", "retries", "disable"):
                self.warn(f"healthcheck.{key}", "ignored: not supported")
        self.body["health"] = health

    def _restart(self, value: Any) -> None:
        mode = "no" if value is False else str(value)
        if mode in ("no", "on-failure") or mode.startswith("on-failure:"):
            self.warn("restart", f"{mode}: services always restart")
        elif mode not in ("always", "unless-stopped"):
            raise ValidationError("restart", f"{mode!r} is not a restart policy")

    # -- volumes and host access ------------------------------------------------------
    def _volumes(self, value: Any) -> None:
        mounts: list[dict[str, Any]] = []
        for index, entry in enumerate(value or ()):
            mount = self._mount(entry, f"volumes[{index}]")
            if mount is not None:
                mounts.append(mount)
        if mounts:
            self.body["mounts"] = mounts

    def _mount(self, entry: Any, where: str) -> dict[str, Any] | None:
        if isinstance(entry, Mapping):
            kind = str(entry.get("type") or "volume")
            source = str(entry.get("source") or "")
            target = str(entry.get("target") or "")
            read_only = bool(entry.get("read_only", False))
            for opt in ("bind", "volume", "consistency"):
                if entry.get(opt):
                    self.warn(f"{where}.{opt}", "ignored: not supported")
            if kind == "tmpfs":
                self.warn(where, "tmpfs ignored: not supported")
                return None
            if kind not in ("bind", "volume"):
                raise ValidationError(where, f"type {kind} is not supported (bind or volume)")
        else:
            parts = str(entry).split(":")
            if len(parts) == 1:
                self.warn(where, f"anonymous volume {parts[0]} ignored: give it a name")
                return None
            if len(parts) > 3:
                raise ValidationError(where, f"{entry!r} is not SOURCE:TARGET[:MODE]")
            source, target = parts[0], parts[1]
            modes = parts[2].split(",") if len(parts) == 3 else []
            for mode in modes:
                if mode not in (
                    "ro",
                    "rw",
                    "z",
                    "Z",
                    "nocopy",
                    "cached",
                    "delegated",
                    "consistent",
                ):
                    raise ValidationError(where, f"mode {mode!r} is not supported")
                if mode not in ("ro", "rw"):
                    self.warn(where, f"mode {mode} ignored")
            read_only = "ro" in modes
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        if not source:
            self.warn(where, f"anonymous volume {target} ignored: give it a name")
            return None
        if kind == "bind":
            source = self._host_path(source)
        else:
            source = self._volume_name(source, where)
        return {"source": source, "target": target, "read_only": read_only, "kind": kind}

    def _volume_name(self, name: str, where: str) -> str:
        if name not in self.ctx.volumes:
            raise ValidationError(where, f"volume {name!r} is not declared under top-level volumes")
        declared = self.ctx.volumes.get(name) or {}
        if declared.get("external"):
            return str(declared.get("name") or name)
        return str(declared.get("name") or f"{self.ctx.stack}_{name}")

    def _api_socket(self, value: Any) -> None:
        if value:
            socket = DOCKER_SOCKETS[0]
            mount = {"source": socket, "target": socket, "read_only": False, "kind": "bind"}
            self.body.setdefault("mounts", []).append(mount)

    def _devices(self, value: Any) -> None:
        devices = []
        for device in value or ():
            if not isinstance(device, str):
                raise ValidationError("devices", "use the short syntax HOST[:CONTAINER[:PERMS]]")
            devices.append(device)
        self._set("devices", devices)

    def _namespace(self, key: str) -> Callable[[Any], None]:
        def handle(value: Any) -> None:
            mode = str(value or "")
            if mode.startswith(("service:", "container:")):
                self.refuse(key, f"{mode}: cannot share another container's namespace")
            elif mode and mode not in ("bridge", "default", "private"):
                self.body[_NAMESPACE_KEYS[key]] = mode  # the server's policy decides
            elif key == "network_mode" and mode:
                self.warn(key, f"{mode}: dockyard's default network is used")

        return handle

    def _labels(self, value: Any, where: str) -> dict[str, str]:
        if isinstance(value, Mapping):
            return {str(k): "" if v is None else _scalar(v) for k, v in value.items()}
        if isinstance(value, list):
            pairs = (str(item).partition("=") for item in value)
            return {key: val for key, _, val in pairs}
        raise ValidationError(where, "must be a mapping or a list of KEY=VALUE")


def _args(value: Any, where: str) -> list[str]:
    """A command as Compose gives it: a list, or a string split like a shell would."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValidationError(where, f"cannot split {value!r}: {exc}") from None
    if isinstance(value, list):
        return [_scalar(a) for a in value]
    raise ValidationError(where, "must be a string or a list of strings")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _size(value: Any) -> str | int:
    return value if isinstance(value, int) and not isinstance(value, bool) else str(value).strip()


def _whole(value: Any) -> Any:
    """A whole number, also from an interpolated string ("3"); other values unchanged
    (for the caller to refuse)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value
