"""URLs of the study storage and the tracking server: masking secrets for display, engine options.

``mask_url`` is what every log line, MLflow param and status table shows instead of a URL that may
carry a password; ``engine_kwargs_for`` is what the controller passes to Optuna's ``RDBStorage``.
"""

from __future__ import annotations

import re
from typing import Any

from nas.errors import NasError

MASK = "***"

# Query parameters that carry secrets in SQLAlchemy, libpq and object-store URLs.
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&][^=&#]*(?:password|passwd|pwd|secret|token|signature|credential)[^=&#]*=)[^&#]*",
    re.IGNORECASE,
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")

# libpq drivers (psycopg2, psycopg 3) take these keywords through `connect_args`.
_LIBPQ_DRIVERS = {"", "psycopg2", "psycopg", "psycopg2cffi"}
_MYSQL_DRIVERS = {"", "mysqldb", "pymysql"}


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``; a URL without credentials comes back unchanged.

    Not SQLAlchemy's ``make_url(url).render_as_string(hide_password=True)``: that one leaks the tail of a
    password holding an unencoded '@' (``u:p@ss@host`` -> ``u:***@ss@host``), leaves query secrets
    (``?password=``, ``X-Amz-Signature``) in clear and reorders the query of the URL it shows.

    Masks the password of ``scheme://user:password@host`` and query parameters whose name holds
    ``password``, ``secret``, ``token`` and the like (``?password=...``, ``?X-Amz-Signature=...``).
    A user name alone is kept: it is not a secret and it helps reading logs.
    """
    masked = url
    scheme_end = masked.find("://")
    if scheme_end > 0:
        start = scheme_end + 3
        end = len(masked)
        for stop in "/?#":
            index = masked.find(stop, start)
            if index != -1:
                end = min(end, index)
        netloc = masked[start:end]
        # The last '@' ends the user info: an unencoded '@' in a password must not leak its tail.
        userinfo, at, host = netloc.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            masked = f"{masked[:start]}{user}:{MASK}@{host}{masked[end:]}"
    return _SECRET_QUERY.sub(lambda match: match.group("key") + MASK, masked)


def mask_urls_in(text: str) -> str:
    """``text`` with every URL in it passed through ``mask_url`` (for command lines and log messages)."""
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)


def engine_kwargs_for(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for an Optuna ``RDBStorage`` at ``url``, held by one controller process.

    PostgreSQL and MySQL: ``pool_pre_ping`` (a connection dropped by a server restart, a proxy or an
    idle timeout is replaced at checkout instead of failing the next query), ``pool_recycle`` below
    common idle timeouts, a small pool (2 + 3 overflow: many workers or controllers each hold their
    own pool, and PostgreSQL allows 100 connections by default), ``pool_timeout``, and through
    ``connect_args`` a connect timeout plus TCP keepalives (libpq drivers) so a dead server is
    noticed in seconds rather than hanging. SQLite: only a busy timeout, so a second process waits
    for the file lock instead of failing with "database is locked".

    What the controller should pass (Optuna 5.0)::

        RDBStorage(url, engine_kwargs=engine_kwargs_for(url))

    ``heartbeat_interval`` / ``grace_period`` / ``heartbeat_stale_trial_callback`` only take effect
    for trials run through ``study.optimize()``; with ask/tell (Ray Tune's ``OptunaSearch``) a trial
    left RUNNING by a killed controller is not failed by Optuna, so the controller must settle such
    trials itself on resume. ``failed_trial_callback`` is deprecated since Optuna 4.9.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise NasError(f"--storage: not a SQLAlchemy URL: {mask_url(url)!r}") from error
    backend = parsed.get_backend_name()
    driver = parsed.drivername.partition("+")[2]
    if backend == "sqlite":
        return {"connect_args": {"timeout": 30}}
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "pool_size": 2,
        "max_overflow": 3,
        "pool_timeout": 30,
    }
    if backend == "postgresql" and driver in _LIBPQ_DRIVERS:
        kwargs["connect_args"] = {
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "application_name": "nas",
        }
    elif backend == "postgresql" and driver == "pg8000":
        kwargs["connect_args"] = {"timeout": 10}
    elif backend in ("mysql", "mariadb") and driver in _MYSQL_DRIVERS:
        kwargs["connect_args"] = {"connect_timeout": 10}
    return kwargs
