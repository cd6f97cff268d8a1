"""Absurd numbers (and NUL characters) are a 422 naming the field, never a 500 (or stored).

Swept from the served OpenAPI document, so a parameter or body field added later
is covered without a new entry: every integer or number query/path parameter,
every integer or number field of a JSON body (nested ones too), and the numeric
keys of the free-form objects the core validates (``restart``, ``health``,
``update``, ``quota``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dockyard.core.policy import RestartPolicy
from dockyard.core.quota import QUOTA_KEYS
from dockyard.core.services import HealthCheck, HealthKind, UpdateConfig
from dockyard.testing import postgres
from dockyard.testing.cluster import LocalCluster

#: Integers past BIGINT, far past it, and numbers past any range (raw JSON tokens).
INTEGER_TOKENS = ["9223372036854775808", "-9223372036854775809", "1" + "0" * 30]
NUMBER_TOKENS = ["1e308", "-1e308", "NaN", "Infinity", "-Infinity", "1e999"]
#: Query strings: the same, as text.
QUERY_INTEGERS = ["9223372036854775808", "-9223372036854775809", "1" + "0" * 30]
QUERY_NUMBERS = ["inf", "-inf", "nan", "1e999"]
#: For keys of free-form objects: also values of the wrong type.
WRONG_TYPES = ['"abc"', "[]", "{}", "true", "null"]

#: A minimal valid body of every request schema with a numeric field.
MINIMAL: dict[str, dict[str, Any]] = {
    "JobCreate": {"name": "bounds", "image": "busybox"},
    "ServiceCreate": {"name": "bounds", "image": "busybox"},
    "JobBatch": {"jobs": [{"name": "bounds", "image": "busybox"}]},
    "ScaleRequest": {"replicas": 1},
    "TemplateCreate": {"name": "bounds", "service": {"image": "busybox"}},
    "GcRequest": {},
    "JoinTokenCreate": {},
    "ExecRequest": {"command": ["true"]},
    "DrainRequest": {},
    "UserUpdate": {},
    "ValueCreate": {"name": "bounds", "data": "YQ=="},
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """On each store: PostgreSQL refuses integers past BIGINT and NUL characters."""
    with postgres.store_for(str(request.param), "dy_bounds") as db_url:
        cluster = LocalCluster(db_url=db_url).start()
        try:
            yield cluster
        finally:
            cluster.close()


@pytest.fixture(scope="module")
def api(server: LocalCluster) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def schema(api: httpx.Client) -> dict[str, Any]:
    return dict(api.get("/openapi.json").json())


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def kinds(schema: dict[str, Any], node: dict[str, Any]) -> set[str]:
    node = resolve(schema, node)
    found = {node["type"]} if isinstance(node.get("type"), str) else set()
    for option in node.get("anyOf", []):
        found |= kinds(schema, option)
    return found


def numeric_fields(
    schema: dict[str, Any], node: dict[str, Any], path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, "integer" | "number") of every numeric field under ``node``."""
    node = resolve(schema, node)
    options = [resolve(schema, o) for o in node.get("anyOf", [])] or [node]
    for option in options:
        kind = option.get("type")
        if kind in ("integer", "number") and path:
            yield path, str(kind)
        elif kind == "array" and "items" in option:
            yield from numeric_fields(schema, option["items"], (*path, 0))
        elif kind == "object" or "properties" in option:
            for name, child in option.get("properties", {}).items():
                yield from numeric_fields(schema, child, (*path, name))


def with_value(body: dict[str, Any], path: tuple[str | int, ...], token: str) -> str:
    """``body`` as JSON text with the raw token at ``path`` (containers made as needed)."""
    data: Any = copy.deepcopy(body)
    node = data
    for key, nxt in zip(path, [*path[1:], None], strict=True):
        if nxt is None:
            if isinstance(key, int):
                node[:] = [*node[:key], "\0TOKEN\0"]
            else:
                node[key] = "\0TOKEN\0"
            break
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(key, int):
            if len(node) <= key:
                node.append(empty)
            node = node[key]
        else:
            node = node.setdefault(key, empty)
    return json.dumps(data).replace('"\\u0000TOKEN\\u0000"', token)


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def url_of(path: str) -> str:
    """A concrete path: /services/{name} -> /services/bounds (the bodies' name)."""
    return re.sub(r"\{[^}]+\}", "bounds", path)


def assert_refused(response: httpx.Response, field: str, what: str) -> None:
    assert response.status_code == 422, f"{what}: {response.status_code} {response.text[:300]}"
    named = response.json()["field"] or ""
    assert named == field or named.startswith(field + "."), f"{what}: names {named!r}"


def test_numeric_query_and_path_parameters(api: httpx.Client, schema: dict[str, Any]) -> None:
    seen: set[str] = set()
    for method, path, op in operations(schema):
        for param in op.get("parameters", []):
            if param["in"] not in ("query", "path"):
                continue
            found = kinds(schema, param["schema"])
            tokens = QUERY_INTEGERS if "integer" in found else []
            tokens = tokens + (QUERY_NUMBERS if found & {"integer", "number"} else [])
            for token in tokens:
                target = url_of(path)
                params = {}
                if param["in"] == "path":
                    target = path.replace("{" + param["name"] + "}", token)
                    target = url_of(target)
                else:
                    params = {param["name"]: token}
                response = api.request(method, target, params=params)
                assert_refused(response, param["name"], f"{method} {path} {param['name']}={token}")
                seen.add(param["name"])
    assert {"after", "before", "offset", "limit", "since"} <= seen, seen


def test_numeric_body_fields(api: httpx.Client, schema: dict[str, Any]) -> None:
    # PUT /services/bounds finds the service before it checks the new spec.
    created = api.post("/api/v1/services", json=MINIMAL["ServiceCreate"])
    assert created.status_code == 201, created.text
    swept: set[str] = set()
    for method, path, op in operations(schema):
        content = op.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            continue
        body_schema = content["application/json"]["schema"]
        name = body_schema["$ref"].rsplit("/", 1)[1]
        fields = list(numeric_fields(schema, body_schema))
        if not fields:
            continue
        assert name in MINIMAL, f"{method} {path}: add a minimal {name} body to MINIMAL"
        for field_path, kind in fields:
            dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in field_path)
            dotted = dotted.lstrip(".")
            tokens = (INTEGER_TOKENS if kind == "integer" else []) + NUMBER_TOKENS
            for token in tokens:
                response = api.request(
                    method,
                    url_of(path),
                    content=with_value(MINIMAL[name], field_path, token),
                    headers={"Content-Type": "application/json"},
                )
                assert_refused(response, dotted, f"{method} {path} {dotted}={token}")
            swept.add(f"{name}.{dotted}")
    expected = {
        "JobCreate.priority",
        "JobCreate.gpus",
        "JobCreate.ports[0]",
        "JobCreate.kill_grace_s",
        "JobCreate.max_runtime_s",
        "JobCreate.cpu",
        "JobCreate.memory",
        "ServiceCreate.replicas",
        "JobBatch.jobs[0].priority",
        "ScaleRequest.replicas",
        "DrainRequest.deadline_s",
        "UserUpdate.share",
        "GcRequest.retention_s",
        "TemplateCreate.lifetime_s",
        "ExecRequest.timeout_s",
        "JoinTokenCreate.ttl_s",
    }
    assert expected <= swept, expected - swept


def _numeric_keys(example: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in example.items()
        if (isinstance(v, int | float) and not isinstance(v, bool)) or k == "max_attempts"
    ]


FREE_FORM = [
    ("POST", "/api/v1/jobs", "restart", {"mode": "on-failure"}, RestartPolicy().to_dict()),
    (
        "POST",
        "/api/v1/services",
        "health",
        {"kind": "http"},
        HealthCheck(kind=HealthKind.HTTP).to_dict(),
    ),
    ("POST", "/api/v1/services", "update", {}, UpdateConfig().to_dict()),
]


@pytest.mark.parametrize(("method", "path", "field", "base", "example"), FREE_FORM)
def test_numbers_inside_free_form_objects(
    api: httpx.Client,
    method: str,
    path: str,
    field: str,
    base: dict[str, Any],
    example: dict[str, Any],
) -> None:
    keys = _numeric_keys(example)
    assert keys
    body: dict[str, Any] = {"name": "bounds", "image": "busybox"}
    if field == "health":
        body["ports"] = [8080]
    for key in keys:
        for token in INTEGER_TOKENS + NUMBER_TOKENS + WRONG_TYPES:
            if token == "null":
                continue  # the default (max_attempts: unbounded), a valid value
            inner = json.dumps({**base, key: "\0TOKEN\0"}).replace('"\\u0000TOKEN\\u0000"', token)
            text = json.dumps({**body, field: "\0INNER\0"}).replace('"\\u0000INNER\\u0000"', inner)
            response = api.request(
                method, path, content=text, headers={"Content-Type": "application/json"}
            )
            assert_refused(response, field, f"{path} {field}.{key}={token}")


def test_quota_values(api: httpx.Client) -> None:
    before = api.get("/api/v1/users").json()
    for key in QUOTA_KEYS:
        for token in INTEGER_TOKENS + NUMBER_TOKENS + WRONG_TYPES:
            if token == "null":
                continue  # null: no bound, a valid value
            text = '{"quota": {"%s": %s}}' % (key, token)  # noqa: UP031
            response = api.patch(
                "/api/v1/users/admin", content=text, headers={"Content-Type": "application/json"}
            )
            assert_refused(response, "quota", f"quota.{key}={token}")
    assert api.get("/api/v1/users").json() == before  # nothing was stored


def test_in_range_extremes_are_not_server_errors(api: httpx.Client) -> None:
    """The largest accepted cursor is read like any other (nothing after it)."""
    top = str(2**63 - 1)
    assert api.get("/api/v1/events", params={"after": top}).json() == []
    assert api.get("/api/v1/events", params={"before": top, "order": "desc"}).status_code == 200
    assert api.get("/api/v1/tasks", params={"offset": top}).json() == []
    assert api.get("/api/v1/nodes", params={"offset": top}).json() == []
    assert api.get("/api/v1/accounting", params={"since": "1e308"}).json() == []
    task = api.post("/api/v1/jobs", json={"name": "extremes", "image": "busybox"}).json()["id"]
    page = api.get(f"/api/v1/tasks/{task}/logs", params={"after": top}).json()
    assert page["lines"] == [] and page["next"] == 2**63 - 1


@pytest.mark.parametrize("command", [5, 1.5, True, {"a": "b"}, [1, 2]])
def test_a_health_command_of_the_wrong_type(api: httpx.Client, command: Any) -> None:
    body = {"name": "bounds-h", "image": "busybox", "health": {"kind": "cmd", "command": command}}
    assert_refused(api.post("/api/v1/services", json=body), "health", f"command={command!r}")


def string_fields(
    schema: dict[str, Any], node: dict[str, Any], path: tuple[str | int, ...] = ()
) -> Iterator[tuple[str | int, ...]]:
    """The path of every string field under ``node`` (array items as index 0)."""
    node = resolve(schema, node)
    options = [resolve(schema, o) for o in node.get("anyOf", [])] or [node]
    for option in options:
        kind = option.get("type")
        if kind == "string" and path:
            yield path
        elif kind == "array" and "items" in option:
            yield from string_fields(schema, option["items"], (*path, 0))
        elif kind == "object" or "properties" in option:
            for name, child in option.get("properties", {}).items():
                yield from string_fields(schema, child, (*path, name))


def test_nul_characters_in_parameters(api: httpx.Client, schema: dict[str, Any]) -> None:
    """PostgreSQL cannot compare a string with NUL in it: a 422, not a 500 or a match."""
    seen: set[str] = set()
    for method, path, op in operations(schema):
        for param in op.get("parameters", []):
            if param["in"] not in ("query", "path") or "string" not in kinds(
                schema, param["schema"]
            ):
                continue
            if method == "GET" and path == "/api/v1/events/stream" and param["in"] == "query":
                continue  # (only integer query parameters)
            target, params = url_of(path), {param["name"]: "a\x00b"}
            if param["in"] == "path":
                target = url_of(path.replace("{" + param["name"] + "}", "a%00b"))
                params = {}
            response = api.request(method, target, params=params, json={})
            assert_refused(response, param["name"], f"{method} {path} {param['name']}")
            seen.add(param["name"])
    assert {"q", "ref", "name", "user", "kind", "task", "node"} <= seen, seen


def test_nul_characters_in_bodies(api: httpx.Client, schema: dict[str, Any]) -> None:
    swept: set[str] = set()
    for method, path, op in operations(schema):
        content = op.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            continue
        body_schema = content["application/json"]["schema"]
        name = body_schema["$ref"].rsplit("/", 1)[1]
        base = MINIMAL.get(name, {"name": "bounds"} if name == "UserCreate" else {})
        for field_path in string_fields(schema, body_schema):
            top = str(field_path[0])
            text = with_value(base, field_path, json.dumps("a\x00b"))
            response = api.request(
                method, url_of(path), content=text, headers={"Content-Type": "application/json"}
            )
            assert_refused(response, top, f"{method} {path} {field_path}")
            swept.add(f"{name}.{top}")
        for key in ("env", "labels", "sysctls"):  # string maps: keys and values
            if key in resolve(schema, body_schema).get("properties", {}):
                for entry in ({"A\x00": "v"}, {"A": "v\x00"}):
                    body = json.dumps({**base, key: entry})
                    response = api.request(
                        method,
                        url_of(path),
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                    assert_refused(response, key, f"{method} {path} {key}={entry!r}")
    assert {"JobCreate.name", "JobCreate.image", "JobCreate.command", "UserCreate.name"} <= swept
