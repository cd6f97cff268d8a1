"""Optional TLS for the HTTP API: certificate and key paths in the server config."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dockyard.client import Client
from dockyard.server.config import ServerConfig
from dockyard.server.main import Server
from dockyard.settings import ConfigError
from dockyard.testing.cluster import free_port
from dockyard.testing.wait import wait_for


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = Server(
        ServerConfig(
            data_dir=root / "server",
            port=free_port(),
            gateway=f"tcp://127.0.0.1:{free_port()}",
            tls_certfile=cert,
            tls_keyfile=key,
            insecure_open_join=True,
        )
    )
    server.start_background()
    server.start_http_thread()
    url = f"https://127.0.0.1:{server.cfg.port}"

    def healthy() -> bool:
        try:
            return (
                httpx.get(
                    f"{url}/healthz", verify=ssl.create_default_context(cafile=str(cert)), timeout=1
                ).status_code
                == 200
            )
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=20, message="https health")
    yield server, cert
    server.stop()


def test_https_api_with_ca(
    tls_server: tuple[Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert = tls_server
    token = (server.cfg.data_dir / "admin.token").read_text().strip()
    monkeypatch.setenv("DOCKYARD_CA_CERT", str(cert))
    with Client(url=f"https://127.0.0.1:{server.cfg.port}", token=token) as api:
        assert api.whoami()["name"] == "admin"


def test_plain_http_and_unknown_ca_fail(tls_server: tuple[Server, Path]) -> None:
    server, _ = tls_server
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.cfg.port}/healthz", timeout=2)
    with pytest.raises(httpx.ConnectError):  # self-signed: not trusted without the CA
        httpx.get(f"https://127.0.0.1:{server.cfg.port}/healthz", timeout=2)


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="both"):
        ServerConfig(data_dir=tmp_path, tls_certfile=cert)
    with pytest.raises(ConfigError, match="does not exist"):
        ServerConfig(data_dir=tmp_path, tls_certfile=cert, tls_keyfile=tmp_path / "nope.pem")
