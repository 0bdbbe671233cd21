"""MLflow registry I/O for promotion: look up, register, alias, lock. Fail closed.

Only an answer that really means "not there" (MLflow's ``RESOURCE_DOES_NOT_EXIST``) is
read as absence: any other registry, network, authentication or storage error raises
:class:`RegistryError`, so that an outage can never look like "no champion" and move an
alias. Registration is idempotent: a training run is registered once, however often the
step that registers it runs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from skinlesion.errors import SkinlesionError

log = logging.getLogger(__name__)

# models:/<name>/<version> or models:/<name>@<alias>: a registered model's version
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))$")
CHAMPION = "champion"
CHALLENGER = "challenger"
LOCK_SUFFIX = ".promotion-lock"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
EXISTS = "RESOURCE_ALREADY_EXISTS"


class RegistryError(SkinlesionError, RuntimeError):
    """The registry could not be read or written; nothing was changed by this step."""


def _code(err: Exception) -> str:
    return str(getattr(err, "error_code", ""))


def _failed(what: str, err: Exception) -> RegistryError:
    """One line that names the server and says what this step left as it was."""
    import mlflow

    first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
    return RegistryError(
        f"MLflow registry at {mlflow.get_tracking_uri()}: {what} failed "
        f"({type(err).__name__}: {first}); the registry is unchanged by this step"
    )


def _alias_missing(err: Exception) -> bool:
    """MLflow's answer for a registered model that exists without the alias: not
    RESOURCE_DOES_NOT_EXIST but INVALID_PARAMETER_VALUE, "Registered model alias … not
    found" (a model registered under the manual policy, or kept from being champion)."""
    message = str(err).lower()
    return _code(err) == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message


@dataclass(frozen=True)
class ResolvedVersion:
    """A model URI pinned to what it means now: an alias becomes its version. What the
    server serves, batch scoring scores and monitoring compares with."""

    requested: str
    uri: str  # models:/<name>/<version>, or the URI as given when it names no alias
    version: str  # "" when the URI names no version
    run_id: str


def pin(uri: str) -> tuple[str, str]:
    """(pinned URI, version) of a model URI: an alias URI becomes ``models:/name/<v>``;
    anything else is kept as given, with version "" unless it names one."""
    import mlflow

    match = VERSION_URI.match(uri)
    if match is None or not match["alias"]:
        return uri, match["version"] if match else ""
    try:
        found = mlflow.MlflowClient().get_model_version_by_alias(match["name"], match["alias"])
    except Exception as err:  # registry unreachable or alias missing: MLflow raises several
        raise RegistryError(f"cannot resolve {uri}: {type(err).__name__}: {err}") from err
    return f"models:/{match['name']}/{found.version}", str(found.version)


def servable_info(uri: str) -> Any:
    """MLflow's ModelInfo of ``uri`` (pinned) if it is a model of
    :mod:`skinlesion.model.servable`; a model of the earlier Keras flavour, which takes
    resized tensors rather than images, is refused with what to do."""
    from mlflow.models import get_model_info

    from skinlesion.model.servable import is_serving_model

    try:
        info = get_model_info(uri)
    except Exception as err:  # registry or storage failure
        raise RegistryError(f"cannot read {uri}: {type(err).__name__}: {err}") from err
    if not is_serving_model(info):
        raise RegistryError(
            f"{uri} was registered before models carried their preprocessing and takes "
            f"resized tensors, not images. Register it again with `skinlesion upgrade-model "
            f"{uri}` (its aliases follow), or promote a model trained by this version."
        )
    return info


def resolve_version(uri: str) -> tuple[ResolvedVersion, Any]:
    """``uri`` pinned and checked servable, with its ModelInfo: the one lookup that the
    server, batch scoring and monitoring share (a registry failure or an unservable model
    is refused with :class:`RegistryError`)."""
    pinned, version = pin(uri)
    info = servable_info(pinned)
    return ResolvedVersion(uri, pinned, version, info.run_id or ""), info


def model_version(client: Any, uri: str) -> Any:
    """The registry's ModelVersion that ``uri`` (``models:/name/<v>`` or ``models:/name@alias``)
    names."""
    match = VERSION_URI.match(uri)
    if match is None:
        raise RegistryError(f"{uri}: expected models:/<name>/<version> or models:/<name>@<alias>")
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(match["name"], match["alias"])
        return client.get_model_version(match["name"], match["version"])
    except Exception as err:
        raise _failed(f"look up {uri}", err) from err


def find_champion(client: Any, name: str) -> Any | None:
    """The version holding the `champion` alias; None only when the registry says that
    the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if _code(err) == NOT_FOUND or _alias_missing(err):
            return None
        raise _failed(f"looking up {name}@{CHAMPION}", err) from err
    except Exception as err:
        raise _failed(f"looking up {name}@{CHAMPION}", err) from err


def ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name, description="HAM10000 skin-lesion classifier (7 classes), promoted by skinlesion."
        )
    except MlflowException as err:
        if _code(err) != EXISTS:
            raise _failed(f"creating {name}", err) from err


def version_of_run(client: Any, name: str, run_id: str) -> Any | None:
    """The version of ``name`` already registered from training run ``run_id``, if any."""
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def register(
    client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str
) -> tuple[Any, bool]:
    """(version, created): the run's existing version, or a new one. A retried step or a
    second `dvc repro` therefore registers nothing new."""
    existing = version_of_run(client, name, run_id)
    if existing is not None:
        log.info("run %s is already %s version %s", run_id, name, existing.version)
        return existing, False
    version = create_version(client, name, model_uri, run_id, tags, description)
    log.info("registered run %s as %s version %s", run_id, name, version.version)
    return version, True


def create_version(
    client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str
) -> Any:
    """A new version of ``name`` from a logged model (``models:/m-...``) or any source."""
    source, model_id = model_uri, None
    if model_uri.startswith("models:/m-"):  # an MLflow 3 logged model
        logged = client.get_logged_model(model_uri.removeprefix("models:/"))
        source, model_id = logged.artifact_location, logged.model_id
    return client.create_model_version(
        name,
        source,
        run_id=run_id,
        model_id=model_id,
        tags=tags,
        description=description or None,
        await_creation_for=60,
    )


def recorded_lesions(client: Any, run_id: str, artifact: str) -> dict[str, list[str]] | None:
    """The train/val lesion ids a training run recorded; None when it recorded none (a
    version trained before this record existed). Any failure to read raises."""
    import mlflow.artifacts

    try:
        if artifact not in {f.path for f in client.list_artifacts(run_id)}:
            return None
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{artifact}")
    except Exception as err:  # MLflow, HTTP and storage clients raise their own types
        raise _failed(f"reading {artifact} of run {run_id}", err) from err
    return json.loads(text)


@contextmanager
def registry_lock(
    client: Any, name: str, timeout_s: float = 900, stale_after_s: float = 3600, poll_s: float = 0.5
) -> Iterator[None]:
    """Mutual exclusion between promotions of ``name``, on any MLflow backend: registering
    the lock model is atomic (unique name). A lock older than ``stale_after_s`` (a crashed
    promotion) is broken. Every path through the wait loop checks the deadline and sleeps."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(
                lock, tags={"owner": token}, description="held while a promotion runs"
            )
            break
        except MlflowException as err:
            # NOT_FOUND: the holder released it while the server was reporting the clash
            # (seen on PostgreSQL); both mean "held a moment ago": look, wait, try again.
            if _code(err) not in (EXISTS, NOT_FOUND):
                raise _failed(f"taking the lock {lock}", err) from err
        try:
            held = client.get_registered_model(lock)
            if time.time() - held.creation_timestamp / 1000 > stale_after_s:
                log.warning("breaking a stale promotion lock on %s", name)
                client.delete_registered_model(lock)
        except MlflowException as err:
            if _code(err) != NOT_FOUND:  # released between our calls: wait and try again
                raise _failed(f"inspecting the lock {lock}", err) from err
        if time.monotonic() > deadline:
            raise RegistryError(f"another promotion of {name} holds {lock}; gave up waiting")
        time.sleep(poll_s)
    try:
        yield
    finally:
        client.delete_registered_model(lock)
