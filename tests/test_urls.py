"""Masking of secrets in URLs and the SQLAlchemy engine options of the study storage."""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from optuna.storages import RDBStorage

from nas._urls import engine_kwargs_for, mask_url, mask_urls_in
from nas.errors import NasError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg2://nas:s3cret@db.example:5432/nas", "postgresql+psycopg2://nas:***@db.example:5432/nas"),
        ("http://alice:pa%40ss@mlflow:5000/", "http://alice:***@mlflow:5000/"),
        # An unencoded '@' in the password: nothing after the user name may leak.
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u:@host/db", "postgresql://u:***@host/db"),
        ("postgresql://host/db?user=u&password=hunter2&sslmode=require",
         "postgresql://host/db?user=u&password=***&sslmode=require"),
        ("s3://bucket/key?X-Amz-Signature=abc123&X-Amz-Expires=60", "s3://bucket/key?X-Amz-Signature=***&X-Amz-Expires=60"),
    ],
)
def test_mask_url_hides_passwords(url: str, expected: str) -> None:
    masked = mask_url(url)
    assert masked == expected
    for secret in ("s3cret", "pa%40ss", "hunter2", "abc123", "ss@host"):
        if secret in url and secret not in expected:
            assert secret not in masked


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////tmp/nas-runs/study.db",
        "sqlite:///relative.db",
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        "http://127.0.0.1:5000",
        "file:///tmp/mlruns",
        "/plain/path",
        "auto",
    ],
)
def test_mask_url_leaves_urls_without_credentials_unchanged(url: str) -> None:
    assert mask_url(url) == url


def test_mask_urls_in_text() -> None:
    line = "nas launch s.py --storage postgresql://nas:topsecret@db/nas --tracking-uri http://ml:5000"
    assert mask_urls_in(line) == "nas launch s.py --storage postgresql://nas:***@db/nas --tracking-uri http://ml:5000"


def test_engine_kwargs_postgres() -> None:
    kwargs = engine_kwargs_for("postgresql+psycopg2://nas:pw@127.0.0.1:5432/nas")
    assert kwargs["pool_pre_ping"] is True
    assert 0 < kwargs["pool_recycle"] <= 3600
    assert kwargs["pool_size"] + kwargs["max_overflow"] <= 10
    assert kwargs["connect_args"]["connect_timeout"] > 0
    assert kwargs["connect_args"]["keepalives"] == 1


def test_engine_kwargs_sqlite_only_busy_timeout(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    kwargs = engine_kwargs_for(url)
    assert kwargs == {"connect_args": {"timeout": 30}}
    # The options must be accepted by Optuna's RDBStorage and reach the sqlite3 connection.
    storage = RDBStorage(url, engine_kwargs=kwargs)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[0.5, 1.0]))
    assert len(study.trials) == 1
    with sqlite3.connect(tmp_path / "study.db") as connection:
        assert connection.execute("select count(*) from trials").fetchone() == (1,)


@pytest.mark.parametrize("url", ["db.example:5432", "postgresql+psycopg2://u:hunter2@host:notaport/db"])
def test_engine_kwargs_rejects_garbage_without_leaking(url: str) -> None:
    with pytest.raises(NasError, match="--storage") as caught:
        engine_kwargs_for(url)
    assert "hunter2" not in str(caught.value)
