"""The model registry: finding a trial's run and model, registering exported winners (``nas export``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.errors import NasError
from nas.tracking._common import log_pytorch_model, mask_secrets, masked_first_line


def find_trial_run_id(tracking_uri: str, search_name: str, number: int) -> str | None:
    """Id of the MLflow child run of trial ``number`` of a search, or None when the store has none."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(search_name)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`nas.role` = 'trial' and tags.`nas.trial_number` = '{int(number)}'",
            max_results=10,
        )
    except Exception as error:  # store back ends raise unrelated exception types
        where = mask_secrets(tracking_uri)
        raise NasError(f"MLflow store {where} cannot be read: {masked_first_line(error)}") from None
    runs = [r for r in runs if r.data.tags.get("nas.search", search_name) == search_name]
    return runs[0].info.run_id if runs else None


def trial_model_uri(tracking_uri: str, run_id: str | None) -> str | None:
    """The model a search logged on a trial's run (tag ``nas.model_uri``), or None."""
    if not run_id:
        return None
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags.get("nas.model_uri")


@dataclass
class RegistryEntry:
    """One model to register: the trial's run, and either an already logged model or the module to log."""

    number: int
    run_id: str
    model_uri: str | None
    model: Any
    input_example: Any
    tags: dict[str, str] = field(default_factory=dict)


def register_models(
    tracking_uri: str, name: str, entries: list[RegistryEntry], aliases: Mapping[str, int]
) -> dict[int, str]:
    """Register each entry as a new version of the registered model ``name``; returns number -> version.

    An entry without ``model_uri`` is first logged on its trial's run (name ``export``). ``aliases``
    maps an alias (``best-accuracy``, ``min-energy``, ``knee``) to a trial number among the entries;
    aliases replace the deprecated stages. Version tags are the entry's tags (its metrics).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions: dict[int, str] = {}
    # The SQL registry resolves a "models:/<id>" source through the process-wide tracking URI.
    with _use_tracking_uri(tracking_uri):
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, tags={"nas.search": name},
                                           description=f"Exported architectures of nas search {name}")
        for entry in entries:
            source = entry.model_uri
            if source is None:
                source = log_pytorch_model(client, entry.run_id, entry.model, entry.input_example, name="export")
            version = client.create_model_version(name, source=source, run_id=entry.run_id or None,
                                                  tags=dict(entry.tags))
            versions[entry.number] = str(version.version)
    for alias, number in aliases.items():
        if number not in versions:
            raise ValueError(f"alias {alias!r} names trial {number}, which is not among the entries")
        client.set_registered_model_alias(name, alias, versions[number])
    return versions
