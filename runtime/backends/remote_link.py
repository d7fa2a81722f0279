"""The robot's wire to an inference server: KServe v2 / Open Inference Protocol over gRPC or HTTP.

`RemoteLink` sends one request of named numpy tensors and returns the named outputs, with a
deadline on every call. It knows nothing of policies (runtime/backends/remote.py does) and
carries no pickle: tensors travel as the protocol's raw little-endian bytes with a declared
dtype and shape, and a server can only ever answer with tensors.

Failures come in two kinds. A call that did not complete in time or could not reach the server
(deadline, refused or reset connection, server unavailable or shutting down) raises
`InferenceMiss`: the loop keeps the current chunk and counts it. A server that answered with a
refusal (unknown model, inputs that do not fit, a server-side error) raises `RemoteError`,
which ends the episode safely: retrying a wrong request does not fix it.

`tritonclient.http` is documented as usable from one thread only (it runs on gevent), so each
thread that calls gets its own HTTP client; the gRPC client is thread-safe and shared.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from vla_runtime.common.cli import require_modules
from vla_runtime.common.errors import UserError
from vla_runtime.runtime.types import InferenceMiss

logger = logging.getLogger(__name__)

SCHEMES = {"grpc": ("grpc", False), "grpcs": ("grpc", True), "http": ("http", False), "https": ("http", True)}
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
SETUP_TIMEOUT_S = 10.0  # seconds for the checks and the warm-up before the robot moves (a cold server is slow)
AUTH_ENV = "VLA_RUNTIME_REMOTE_AUTH"  # "Header-Name: value", e.g. "Authorization: Bearer <token>"
NP_TO_WIRE = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
              "uint8": "UINT8", "bool": "BOOL"}
# gRPC status codes and HTTP statuses that mean "not now" rather than "never"
TRANSIENT = ("DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED", "RESOURCE_EXHAUSTED", "ABORTED", "timed out",
             "Timeout", "timeout", "503", "502", "504", "Connection refused", "connection reset", "Broken pipe")


class RemoteError(RuntimeError):
    """The server answered, but with a refusal; one line naming it and the fix."""


@dataclass(frozen=True)
class ServerAddress:
    protocol: str  # "grpc" or "http"
    tls: bool  # grpcs:// or https://
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> ServerAddress:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise UserError(f"--server {url!r}: use grpc://HOST:PORT, grpcs://, http:// or https://")
        protocol, tls = SCHEMES[parts.scheme]
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
            raise UserError(f"--server {url!r}: expected {parts.scheme}://HOST:PORT and nothing else "
                            f"(credentials go in ${AUTH_ENV} or --auth-file, never in the URL)")
        try:
            port = parts.port or DEFAULT_PORTS[protocol]
        except ValueError:
            raise UserError(f"--server {url!r}: the port is not a number in 1..65535") from None
        return cls(protocol, tls, parts.hostname, port)

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}{'s' if self.tls else ''}://{self.hostport}"


def load_auth_header(auth_file: str | None) -> dict[str, str]:
    """The auth header from --auth-file or $VLA_RUNTIME_REMOTE_AUTH ("Name: value"); {} when neither."""
    if auth_file:
        try:
            text = Path(auth_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"--auth-file {auth_file}: cannot read it ({exc.strerror})") from None
        source = f"--auth-file {auth_file}"
    else:
        text = os.environ.get(AUTH_ENV, "").strip()
        source = f"${AUTH_ENV}"
        if not text:
            return {}
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not value.strip() or "\n" in text or " " in name.strip():
        raise UserError(f"{source}: expected one line 'Header-Name: value', e.g. 'Authorization: Bearer TOKEN'")
    return {name.strip(): value.strip()}


class RemoteLink:
    """Named numpy tensors to a Triton / KServe v2 model and back, with a deadline per call."""

    def __init__(self, address: ServerAddress, model: str, timeout_s: float, headers: Mapping[str, str] | None = None,
                 ca_file: str | None = None):
        if timeout_s <= 0:
            raise ValueError("the remote timeout must be > 0 seconds")
        if ca_file is not None and not address.tls:
            raise UserError(f"--ca-file needs a TLS server (grpcs:// or https://), not {address}")
        if ca_file is not None and not Path(ca_file).is_file():
            raise UserError(f"--ca-file {ca_file}: no such file")
        module = f"tritonclient.{address.protocol}"
        (self._mod,) = require_modules(module, error=lambda name: UserError(
            f"{name} is not installed; the remote backend needs pip install 'vla-runtime[remote]'"))
        (self._utils,) = require_modules("tritonclient.utils", error=UserError)
        self.address, self.model, self.timeout_s = address, model, timeout_s
        # gRPC metadata keys are lower case; HTTP header names are case-insensitive anyway
        self._headers = {k.lower() if address.protocol == "grpc" else k: v for k, v in (headers or {}).items()}
        self._ca_file = ca_file
        self._local = threading.local()  # HTTP: one client per thread
        self._shared = self._make_client() if address.protocol == "grpc" else None

    # -- what the policy calls ---------------------------------------------------------------------

    def check_model(self, timeout_s: float = SETUP_TIMEOUT_S) -> dict:
        """The served model's configuration; refuses in one line when it is not there or not ready."""
        client = self._client(timeout_s)
        deadline = self._deadline(timeout_s)
        try:
            if not client.is_model_ready(self.model, headers=self._headers, **deadline):
                raise RemoteError(f"{self.address}: model {self.model!r} is not ready; check the server's log")
            extra = {"as_json": True} if self.address.protocol == "grpc" else {}
            config = client.get_model_config(self.model, headers=self._headers, **deadline, **extra)
        except self._utils.InferenceServerException as exc:
            raise self._failure(exc) from None
        except OSError as exc:
            raise InferenceMiss(f"{self.address}: {exc}") from None
        finally:
            self._release(client)
        return config.get("config", config)  # gRPC wraps it as {"config": ...}

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: tuple[str, ...],
              timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """One request within `timeout_s` (default: the link's); InferenceMiss (late, unreachable) or RemoteError."""
        mod = self._mod
        tensors = []
        for name, value in inputs.items():
            tensor = mod.InferInput(name, list(value.shape), NP_TO_WIRE[value.dtype.name])
            if self.address.protocol == "http":
                tensor.set_data_from_numpy(value, binary_data=True)
            else:
                tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        wanted = [mod.InferRequestedOutput(name) for name in outputs]
        client = self._client(timeout_s)
        try:
            result = client.infer(self.model, tensors, outputs=wanted, headers=self._headers,
                                  **self._deadline(timeout_s))
        except self._utils.InferenceServerException as exc:
            raise self._failure(exc) from None
        except (OSError, TimeoutError) as exc:  # HTTP: refused, reset, socket timeout
            raise InferenceMiss(f"{self.address}: {exc or type(exc).__name__}") from None
        finally:
            self._release(client)
        return {name: result.as_numpy(name) for name in outputs}

    def close(self) -> None:
        for client in (self._shared, getattr(self._local, "client", None)):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # noqa: BLE001 - closing a dead connection is not an error
                    logger.debug("closing the remote client: %s", exc)

    # -- plumbing ----------------------------------------------------------------------------------

    def _deadline(self, timeout_s: float | None) -> dict:
        if self.address.protocol != "grpc":
            return {}  # HTTP: the client's network timeout
        return {"client_timeout": timeout_s or self.timeout_s}

    def _client(self, timeout_s: float | None = None):
        """The shared gRPC client, this thread's HTTP client, or a one-off HTTP client with another timeout."""
        if self._shared is not None:
            return self._shared
        if timeout_s is not None and timeout_s != self.timeout_s:
            return self._make_client(timeout_s)
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make_client()
        return client

    def _release(self, client) -> None:
        """Close a one-off client (HTTP with a non-default timeout); the others live on."""
        if client is not self._shared and client is not getattr(self._local, "client", None):
            client.close()

    def _make_client(self, timeout_s: float | None = None):
        a = self.address
        if a.protocol == "grpc":
            return self._mod.InferenceServerClient(a.hostport, ssl=a.tls, root_certificates=self._ca_file)
        tls = {}
        if a.tls:
            import gevent.ssl

            tls = {"ssl": True, "ssl_context_factory": gevent.ssl.create_default_context,
                   "ssl_options": {"ca_certs": self._ca_file} if self._ca_file else {}}
        timeout_s = timeout_s or self.timeout_s
        return self._mod.InferenceServerClient(a.hostport, connection_timeout=timeout_s, network_timeout=timeout_s,
                                               **tls)

    def _failure(self, exc) -> Exception:
        text = f"{exc.status() or ''} {exc.message()}".strip()
        if "restricted" in text:  # Triton refuses a request without the header its restricted protocols want
            return RemoteError(f"{self.address}: {_short(text)}; put that header in --auth-file or ${AUTH_ENV}")
        if any(mark in text for mark in TRANSIENT):
            return InferenceMiss(f"{self.address}: {_short(text)}")
        return RemoteError(f"{self.address} model {self.model!r}: {_short(text)}")


def _short(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


__all__ = ["AUTH_ENV", "RemoteError", "RemoteLink", "ServerAddress", "load_auth_header"]
