"""The reachability probe of an MLflow tracking server: a few seconds, one clear line when it fails."""

from __future__ import annotations

import base64
import os
import urllib.error
import urllib.parse
import urllib.request

from nas.errors import NasError
from nas.tracking._common import mask_secrets

# How long a tracking server may take to answer the reachability probe.
PROBE_TIMEOUT_S = 5.0


def probe_http(tracking_uri: str, search_name: str) -> None:
    """Ask an MLflow server's REST API for the search's experiment; one-line ``NasError`` when it does not answer."""
    where = mask_secrets(tracking_uri)
    query = urllib.parse.urlencode({"experiment_name": search_name})
    try:
        base, headers = _split_credentials(tracking_uri)
    except ValueError as error:  # e.g. a port out of range
        raise NasError(f"--tracking-uri {where} is malformed ({error})") from None
    url = base.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?" + query
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            response.read(1)
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise NasError(
                f"MLflow tracking server {where} refused access (HTTP {error.code}); "
                "set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD"
            ) from None
        if error.code == 404 and b"RESOURCE_DOES_NOT_EXIST" in error.read():
            return  # the server answered: the experiment does not exist yet
        raise NasError(
            f"{where} does not look like an MLflow tracking server (HTTP {error.code} on the REST API)"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise NasError(
            f"MLflow tracking server {where} does not answer ({reason}); start it or fix --tracking-uri"
        ) from None


def _split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """``(uri without user:password@, auth headers)``: MLflow's client (requests) sends URL credentials as
    HTTP basic auth, while urllib would take them for part of the host name."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return uri, _auth_headers()
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {basic}"}


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client would send, read from the same environment variables."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}
