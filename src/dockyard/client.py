"""Python SDK over the REST API. The CLI talks to the server only through this."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import ssl
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from dockyard import config
from dockyard.errors import DockyardError
from dockyard.files import write_secret

TOKEN_FILE_NAME = "token"


class ClientError(DockyardError):
    """The API answered with an error (or could not be reached)."""

    def __init__(
        self, message: str, status: int = 0, code: str = "", field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


def default_url() -> str:
    """``$DOCKYARD_URL``, else the current context (``dockyard context use``), else the
    URL of a ``dockyard up`` running on the default data directory (it may have taken
    another port), else ``http://127.0.0.1:8700``."""
    env = os.environ.get("DOCKYARD_URL")
    if env:
        return env
    current = load_contexts().get("current")
    if isinstance(current, str) and current:
        return current
    running = config.running_up()
    if running and isinstance(running.get("url"), str):
        return str(running["url"])
    return f"http://{config.DEFAULT_API_HOST}:{config.DEFAULT_API_PORT}"


def find_token(url: str | None = None) -> str | None:
    """The token for ``url`` (see :func:`token_source`)."""
    return token_source(url)[0]


def token_source(url: str | None = None) -> tuple[str | None, str]:
    """The token for ``url`` and where it came from: ``$DOCKYARD_TOKEN``, then the
    token ``dockyard login`` stored for that URL, then the local admin token, then an
    older ``dockyard login``'s single token file. A stored user token is per server
    URL, so it never shadows the admin token of another server."""
    token = os.environ.get("DOCKYARD_TOKEN")
    if token:
        return token.strip(), "$DOCKYARD_TOKEN"
    target = (url or default_url()).rstrip("/")
    entry = load_contexts().get("contexts", {}).get(target)
    if isinstance(entry, dict) and entry.get("token"):
        return str(entry["token"]), f"dockyard login for {target} ({contexts_path()})"
    for path, what in (
        (config.default_data_dir() / "admin.token", "the local admin token"),
        (config.default_config_dir() / TOKEN_FILE_NAME, "an older dockyard login"),
    ):
        try:
            return path.read_text().strip(), f"{what} ({path})"
        except OSError:
            continue
    return None, "no token"


# -- contexts: one token per server URL (``dockyard login URL``, ``context use``) --------
CONTEXTS_FILE_NAME = "contexts.json"


def contexts_path() -> Path:
    return config.default_config_dir() / CONTEXTS_FILE_NAME


def load_contexts() -> dict[str, Any]:
    """``{"current": URL, "contexts": {URL: {"token": ..., "user": ...}}}`` (0600)."""
    try:
        data = json.loads(contexts_path().read_text())
    except (OSError, ValueError):
        return {"current": None, "contexts": {}}
    if not isinstance(data, dict) or not isinstance(data.get("contexts"), dict):
        return {"current": None, "contexts": {}}
    return data


def save_context(url: str, token: str, user: str, use: bool = True) -> Path:
    """Store ``token`` (``user``'s) for ``url``; ``use``: make it the current context."""
    data = load_contexts()
    url = url.rstrip("/")
    data["contexts"][url] = {"token": token, "user": user}
    if use:
        data["current"] = url
    return _write_contexts(data)


def use_context(url: str) -> None:
    data = load_contexts()
    url = url.rstrip("/")
    if url not in data["contexts"]:
        raise ClientError(f"no context for {url}: dockyard login {url} first", code="not_found")
    data["current"] = url
    _write_contexts(data)


def remove_context(url: str) -> bool:
    """Forget ``url``'s token (and stop using it); False when there was none."""
    data = load_contexts()
    url = url.rstrip("/")
    found = data["contexts"].pop(url, None) is not None
    if data.get("current") == url:
        data["current"] = None
    _write_contexts(data)
    return found


def _write_contexts(data: dict[str, Any]) -> Path:
    path = contexts_path()
    write_secret(path, json.dumps(data, indent=2, sort_keys=True))
    return path


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        self.url = (url or default_url()).rstrip("/")
        self.token_source = "--token" if token is not None else ""
        if token is None:
            token, self.token_source = token_source(self.url)
        self.token = token
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # An https API with a private CA: $DOCKYARD_CA_CERT names the CA bundle.
        ca_cert = os.environ.get("DOCKYARD_CA_CERT")
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_cert) if ca_cert else True
        )
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, verify=verify
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach dockyard at {self.url}: {exc}") from exc
        try:
            return self._decode(response)
        except ClientError as exc:
            if exc.status in (401, 403):  # say which token was refused
                exc.args = (f"{exc} (token: {self.token_source})",)
            raise

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise ClientError(
                str(body.get("message") or response.text or response.reason_phrase),
                status=response.status_code,
                code=str(body.get("error") or ""),
                field=body.get("field"),
            )
        if response.status_code == 204:
            return None
        return response.json()

    def status(self) -> dict[str, Any]:
        """The control plane: server instances, leader, term, lease age."""
        return dict(self._request("GET", "/api/v1/status"))

    # -- identity ---------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return dict(self._request("GET", "/api/v1/whoami"))

    # -- jobs and tasks ---------------------------------------------------
    def run_job(
        self,
        name: str,
        image: str,
        command: list[str] | None = None,
        *,
        cpu: str | float | None = None,
        memory: str | int | None = None,
        env: dict[str, str] | None = None,
        kill_grace_s: float | None = None,
        restart: str | dict[str, Any] | None = None,
        max_runtime_s: float | None = None,
        mounts: list[str] | None = None,
        **security: Any,
    ) -> dict[str, Any]:
        """Submit a job. ``security`` takes the API's container options (privileged,
        cap_add, network_mode, pid_mode, ipc_mode, devices, security_opt, sysctls, user)."""
        body: dict[str, Any] = {"name": name, "image": image, "command": command or []}
        if mounts:
            body["mounts"] = mounts
        body.update({k: v for k, v in security.items() if v not in (None, False, [], {}, "")})
        if restart is not None:
            body["restart"] = restart
        if max_runtime_s is not None:
            body["max_runtime_s"] = max_runtime_s
        if cpu is not None:
            body["cpu"] = cpu
        if memory is not None:
            body["memory"] = memory
        if env:
            body["env"] = env
        if kill_grace_s is not None:
            body["kill_grace_s"] = kill_grace_s
        # A job array (array="1-100%10") is its own resource: the answer describes it.
        path = "/api/v1/arrays" if body.get("array") else "/api/v1/jobs"
        return dict(self._request("POST", path, json=body))

    def array(self, ref: str) -> dict[str, Any]:
        """A job array's progress (elements released, tasks by state, why it waits)."""
        return dict(self._request("GET", f"/api/v1/arrays/{_quote(ref)}"))

    def cancel_array(self, ref: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/v1/arrays/{_quote(ref)}/cancel"))

    def run_jobs(self, jobs: list[dict[str, Any]]) -> list[str]:
        """Submit up to 1,000 job bodies at once (all or none); their task ids in order."""
        out = self._request("POST", "/api/v1/jobs/batch", json={"jobs": jobs})
        return [str(i) for i in out["ids"]]

    def tasks(
        self,
        *,
        active: bool = False,
        states: list[str] | None = None,
        page_size: int = 2000,
        q: str | None = None,
        owner: str | None = None,
        node: str | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """Every task you may see, newest first (fetched page by page); ``q`` a name or
        id prefix, ``owner`` a user name, ``node`` a node name or id; at most ``limit``."""
        params: dict[str, Any] = {"active": active, "limit": page_size}
        if limit is not None:
            params["limit"] = page_size = max(1, min(page_size, limit))
        for key, value in (("state", states), ("q", q), ("owner", owner), ("node", node)):
            if value:
                params[key] = value
        out: list[Any] = []
        seen: set[str] = set()
        offset = 0
        while True:
            batch = list(self._request("GET", "/api/v1/tasks", params={**params, "offset": offset}))
            out.extend(t for t in batch if t["id"] not in seen)
            seen.update(t["id"] for t in batch)
            if len(batch) < page_size or (limit is not None and len(out) >= limit):
                return out if limit is None else out[:limit]
            offset += page_size

    def task(self, ref: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/v1/tasks/{_quote(ref)}"))

    def remove_task(self, ref: str) -> dict[str, Any]:
        """Delete an ended task from the history (its logs and events too)."""
        return dict(self._request("DELETE", f"/api/v1/tasks/{_quote(ref)}"))

    def kill(self, ref: str, grace_s: float | None = None) -> dict[str, Any]:
        """Stop a task: SIGKILL after ``grace_s`` (default: its job's kill grace)."""
        params = {} if grace_s is None else {"grace_s": grace_s}
        return dict(self._request("POST", f"/api/v1/tasks/{_quote(ref)}/kill", params=params))

    def logs(
        self, ref: str, after: int = 0, stream: str | None = None, tail: int | None = None
    ) -> dict[str, Any]:
        """A page of lines after ``after``; ``stream`` stdout or stderr only; ``tail``:
        the last N lines instead."""
        params: dict[str, Any] = {"after": after}
        if stream:
            params["stream"] = stream
        if tail is not None:
            params["tail"] = tail
        return dict(self._request("GET", f"/api/v1/tasks/{_quote(ref)}/logs", params=params))

    def follow_logs(
        self, ref: str, after: int = 0, stream: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield log lines until the task ends; the last item is ``{"end": True, ...}``."""
        path = f"/api/v1/tasks/{_quote(ref)}/logs"
        params: dict[str, Any] = {"after": after, "follow": True}
        if stream:
            params["stream"] = stream
        try:
            with self._http.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._decode(response)
                for raw in response.iter_lines():
                    if raw:
                        yield json.loads(raw)
        except httpx.HTTPError as exc:
            raise ClientError(f"log stream from {self.url} broke: {exc}") from exc

    # -- cluster ----------------------------------------------------------
    def nodes(self) -> list[Any]:
        return list(self._request("GET", "/api/v1/nodes"))

    def drain(self, node: str, deadline_s: float = 60.0) -> dict[str, Any]:
        return dict(
            self._request(
                "POST", f"/api/v1/nodes/{_quote(node)}/drain", json={"deadline_s": deadline_s}
            )
        )

    def undrain(self, node: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/v1/nodes/{_quote(node)}/undrain"))

    def events(
        self,
        *,
        after: int = 0,
        task: str | None = None,
        node: str | None = None,
        newest: int | None = None,
        since: float | None = None,
        until: float | None = None,
        kind: str | None = None,
    ) -> list[Any]:
        """Events after id ``after``, oldest first (at most 500); ``newest=N``: the N
        newest instead (still printed oldest first); ``since``/``until`` epoch bounds."""
        params: dict[str, Any] = {"after": after}
        for key, value in (
            ("task", task),
            ("node", node),
            ("since", since),
            ("until", until),
            ("kind", kind),
        ):
            if value is not None and value != "":
                params[key] = value
        if newest is not None:
            params.update(order="desc", limit=newest)
            return list(reversed(self._request("GET", "/api/v1/events", params=params)))
        return list(self._request("GET", "/api/v1/events", params=params))

    # -- users ------------------------------------------------------------
    def add_user(self, name: str, admin: bool = False, home: str = "") -> dict[str, Any]:
        body = {"name": name, "admin": admin, "home": home}
        return dict(self._request("POST", "/api/v1/users", json=body))

    def update_user(
        self,
        name: str,
        home: str | None = None,
        policy: dict[str, Any] | None = None,
        quota: dict[str, Any] | None = None,
        share: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if share is not None:
            body["share"] = share
        if quota is not None:
            body["quota"] = quota
        if home is not None:
            body["home"] = home
        if policy is not None:
            body["policy"] = policy
        return dict(self._request("PATCH", f"/api/v1/users/{_quote(name)}", json=body))

    def users(self) -> list[Any]:
        return list(self._request("GET", "/api/v1/users"))

    def disable_user(self, name: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/v1/users/{_quote(name)}/disable"))

    def enable_user(self, name: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/v1/users/{_quote(name)}/enable"))

    def remove_user(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/users/{_quote(name)}")

    def tokens(self, user: str | None = None) -> list[Any]:
        """Tokens (never their values): admins everyone's, users their own."""
        return list(self._request("GET", "/api/v1/tokens", params={"user": user} if user else {}))

    def task_usage(self, ref: str, window_s: int = 60) -> dict[str, Any]:
        """A task's CPU (cores) and memory per bucket over the last ``window_s`` seconds."""
        return dict(
            self._request(
                "GET", f"/api/v1/tasks/{_quote(ref)}/usage", params={"window_s": window_s}
            )
        )

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/api/v1/tokens/{_quote(token_id)}"))

    # -- queue and scheduler ----------------------------------------------
    def queue(self, limit: int = 1000) -> dict[str, Any]:
        """Queued tasks in scheduling order, and whether the queue is locked."""
        return dict(self._request("GET", "/api/v1/queue", params={"limit": limit}))

    def lock_queue(self) -> dict[str, Any]:
        return dict(self._request("POST", "/api/v1/queue/lock"))

    def unlock_queue(self) -> dict[str, Any]:
        return dict(self._request("POST", "/api/v1/queue/unlock"))

    def delete_queued(self, ref: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/api/v1/queue/{_quote(ref)}"))

    def plan(self, name: str, image: str, **spec: Any) -> dict[str, Any]:
        """Dry run of a job (same fields as :meth:`run_job`): where it would go now, or why not."""
        preempt = bool(spec.pop("preempt", False))  # also list what it would evict
        body: dict[str, Any] = {"name": name, "image": image}
        body.update({k: v for k, v in spec.items() if v not in (None, [], {}, "")})
        params = {"preempt": True} if preempt else None
        return dict(self._request("POST", "/api/v1/plan", json=body, params=params))

    def create_token(self, user: str | None = None, description: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"description": description}
        if user:
            body["user"] = user
        return dict(self._request("POST", "/api/v1/tokens", json=body))

    # -- accounting and maintenance -------------------------------------------
    def accounting(self, user: str | None = None, since: float | None = None) -> list[Any]:
        params: dict[str, Any] = {}
        if user:
            params["user"] = user
        if since is not None:
            params["since"] = since
        return list(self._request("GET", "/api/v1/accounting", params=params))

    def export_accounting(
        self, fmt: str = "sge", user: str | None = None, since: float | None = None
    ) -> str:
        params: dict[str, Any] = {"format": fmt}
        if user:
            params["user"] = user
        if since is not None:
            params["since"] = since
        try:
            response = self._http.get("/api/v1/accounting/export", params=params)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach dockyard at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            self._decode(response)
        return response.text

    def user_stats(self) -> list[Any]:
        return list(self._request("GET", "/api/v1/users/stats"))

    def gc(self, retention_s: float, accounting_retention_s: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"retention_s": retention_s}
        if accounting_retention_s is not None:
            body["accounting_retention_s"] = accounting_retention_s
        return dict(self._request("POST", "/api/v1/admin/gc", json=body))

    # -- builds -------------------------------------------------------------
    def build(
        self, context: Path, tag: str | None = None, dockerfile: str = "Dockerfile"
    ) -> dict[str, Any]:
        """Upload a build context (a directory, .zip, .tar or .tar.gz); the build starts."""
        params: dict[str, str] = {"dockerfile": dockerfile, "filename": context.name}
        if tag:
            params["tag"] = tag
        data = context_archive(context)
        headers = {"Content-Type": "application/octet-stream"}
        return dict(
            self._request("POST", "/api/v1/builds", params=params, content=data, headers=headers)
        )

    def build_status(self, build_id: str, since: int = 0) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/v1/builds/{_quote(build_id)}?since={since}"))

    def builds(self) -> list[Any]:
        return list(self._request("GET", "/api/v1/builds"))

    # -- exec -------------------------------------------------------------------
    def exec(self, ref: str, command: list[str], timeout_s: float = 60.0) -> dict[str, Any]:
        """Run ``command`` in a running task; waits for it: exit code and output."""
        body = {"command": command, "timeout_s": timeout_s}
        return dict(
            self._request(
                "POST",
                f"/api/v1/tasks/{_quote(ref)}/exec",
                json=body,
                timeout=timeout_s + 30,
            )
        )

    @contextlib.contextmanager
    def exec_socket(
        self, ref: str, command: list[str], tty: bool = True, cols: int = 80, rows: int = 24
    ) -> Iterator[Any]:
        """An interactive exec: ``with api.exec_socket(...) as ws`` gives a connected
        WebSocket (``websockets`` sync client). Send bytes for stdin, text
        ``{"resize": [c, r]}`` / ``{"eof": true}``; receive output bytes, then text
        ``{"exit": code, "error": ...}``."""
        from urllib.parse import urlencode

        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        query = urlencode(
            [("command", arg) for arg in command]
            + [("tty", "true" if tty else "false"), ("cols", cols), ("rows", rows)]
        )
        base = "ws" + self.url[len("http") :]
        ca_cert = os.environ.get("DOCKYARD_CA_CERT")
        kwargs: dict[str, Any] = {}
        if base.startswith("wss") and ca_cert:
            kwargs["ssl"] = ssl.create_default_context(cafile=ca_cert)
        try:
            connection = connect(
                f"{base}/api/v1/tasks/{_quote(ref)}/exec/ws?{query}",
                additional_headers={"Authorization": f"Bearer {self.token}"},
                max_size=None,
                proxy=None,
                **kwargs,
            )
            ws = connection.__enter__()
        except InvalidStatus as exc:
            raise ClientError(f"exec refused: {exc}", exc.response.status_code) from exc
        except (WebSocketException, OSError) as exc:
            raise ClientError(f"exec refused: {exc}") from exc
        try:
            yield ws
        finally:
            connection.__exit__(None, None, None)

    # -- node join tokens (admin) ----------------------------------------------
    def create_join_token(
        self, description: str = "", ttl_s: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"description": description, "ttl_s": ttl_s}
        return dict(self._request("POST", "/api/v1/nodes/join-tokens", json=body))

    def join_tokens(self) -> list[Any]:
        return list(self._request("GET", "/api/v1/nodes/join-tokens"))

    def revoke_join_token(self, token_id: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/api/v1/nodes/join-tokens/{_quote(token_id)}"))

    # -- secrets and configs (docs/security.md); kind: "secret" or "config" ------------
    def create_secret(
        self,
        name: str,
        data: bytes,
        *,
        kind: str = "secret",
        labels: dict[str, str] | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Store a value (409 if the name is taken, unless ``replace``). The server
        never returns it: the answer has its name, size, dates and owner."""
        body = {"name": name, "data": base64.b64encode(data).decode(), "labels": labels or {}}
        if replace:
            path = f"/api/v1/{kind}s/{_quote(name)}"
            return dict(self._request("PUT", path, json=body))
        return dict(self._request("POST", f"/api/v1/{kind}s", json=body))

    def secrets(self, kind: str = "secret") -> list[Any]:
        return list(self._request("GET", f"/api/v1/{kind}s"))

    def secret(self, name: str, kind: str = "secret", owner: str | None = None) -> dict[str, Any]:
        params = {"owner": owner} if owner else None
        return dict(self._request("GET", f"/api/v1/{kind}s/{_quote(name)}", params=params))

    def remove_secret(self, name: str, kind: str = "secret", owner: str | None = None) -> None:
        """Remove it; 409 naming the services while a live one mounts it."""
        params = {"owner": owner} if owner else None
        try:
            response = self._http.delete(f"/api/v1/{kind}s/{_quote(name)}", params=params)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach dockyard at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            self._decode(response)

    # -- services (docs/services.md) ------------------------------------------
    def create_service(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a service from a ServiceCreate body; 409 if the name is taken."""
        return dict(self._request("POST", "/api/v1/services", json=spec))

    def check_service(
        self,
        spec: dict[str, Any],
        *,
        secrets: list[str] | None = None,
        configs: list[str] | None = None,
    ) -> dict[str, Any]:
        """The server's checks of a service body (policy included), creating nothing;
        ``secrets``/``configs``: names a deploy will store first (taken as existing)."""
        params = [("secret", s) for s in secrets or ()] + [("config", c) for c in configs or ()]
        return dict(
            self._request("POST", "/api/v1/services/check", json=spec, params=params or None)
        )

    def update_service(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace the service's spec: a rolling update, or a scale if only replicas changed."""
        return dict(self._request("PUT", f"/api/v1/services/{_quote(name)}", json=spec))

    def apply_service(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create the service, or update it when one of that name exists (``apply -f``)."""
        try:
            return self.update_service(str(spec.get("name", "")), spec)
        except ClientError as exc:
            if exc.status != 404:
                raise
        return self.create_service(spec)

    def services(self) -> list[Any]:
        return list(self._request("GET", "/api/v1/services"))

    def service(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/v1/services/{_quote(name)}"))

    def scale_service(self, name: str, replicas: int) -> dict[str, Any]:
        return dict(
            self._request(
                "POST", f"/api/v1/services/{_quote(name)}/scale", json={"replicas": replicas}
            )
        )

    def remove_service(self, name: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/api/v1/services/{_quote(name)}"))

    # -- templates and instances (CTF-style) ------------------------------------
    def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/api/v1/templates", json=body))

    def templates(self) -> list[Any]:
        return list(self._request("GET", "/api/v1/templates"))

    def remove_template(self, name: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/api/v1/templates/{_quote(name)}"))

    def launch(self, template: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/v1/templates/{_quote(template)}/launch"))

    def instances(self) -> list[Any]:
        return list(self._request("GET", "/api/v1/instances"))


def context_archive(path: Path) -> bytes:
    """A build context as bytes to upload: a directory is tarred (gzip), a file sent as is."""
    if not path.exists():
        raise ClientError(f"{path} does not exist")
    if path.is_file():
        return path.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for root, dirs, names in os.walk(path):  # symlinks are stored as links, never followed
            dirs.sort()
            for name in [*dirs, *sorted(names)]:
                full = Path(root) / name
                tar.add(str(full), arcname=full.relative_to(path).as_posix(), recursive=False)
    return buffer.getvalue()


def _quote(ref: str) -> str:
    return httpx.URL(path=ref).raw_path.decode().replace("/", "%2F")


def save_token(token: str, path: Path | None = None) -> Path:
    """Store a token for later CLI calls in a file only its owner can read."""
    target = path or config.default_config_dir() / TOKEN_FILE_NAME
    write_secret(target, token)
    return target
