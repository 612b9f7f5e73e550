"""The test servers really run: PostgreSQL holds an Optuna study, an MLflow server on it keeps a run."""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage

from nas._urls import engine_kwargs_for

# The fixtures postgres_server and mlflow_server.
pytest_plugins = ["servers"]


def test_postgres_optuna_and_mlflow_server(postgres_server: str, mlflow_server: Callable[[str], str]) -> None:
    url = postgres_server
    assert url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")

    storage = RDBStorage(url, engine_kwargs=engine_kwargs_for(url))
    study = optuna.create_study(storage=storage, study_name="servers", directions=["maximize", "minimize"])
    distributions = {"x": optuna.distributions.IntDistribution(0, 3)}
    study.add_trial(optuna.trial.create_trial(params={"x": 1}, distributions=distributions, values=[0.9, 12.5]))
    # A second, independent storage object sees the same study: it lives in the server, not in memory.
    again = optuna.load_study(study_name="servers", storage=RDBStorage(url, engine_kwargs=engine_kwargs_for(url)))
    assert [trial.values for trial in again.trials] == [[0.9, 12.5]]

    from servers import create_database  # after pytest_plugins loaded it, so its asserts are rewritten

    started = time.monotonic()
    tracking_uri = mlflow_server(create_database(url, "mlflow"))
    print(f"mlflow server healthy after {time.monotonic() - started:.1f} s")
    assert tracking_uri.startswith("http://127.0.0.1:")
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment("servers")
    run = client.create_run(experiment_id, run_name="one")
    client.log_param(run.info.run_id, "width", "32")
    client.log_metric(run.info.run_id, "val_acc", 0.91)
    client.set_terminated(run.info.run_id)

    fetched = MlflowClient(tracking_uri=tracking_uri).get_run(run.info.run_id)
    assert fetched.data.params == {"width": "32"}
    assert fetched.data.metrics["val_acc"] == 0.91
    assert fetched.info.status == "FINISHED"
