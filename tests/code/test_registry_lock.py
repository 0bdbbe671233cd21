"""The promotion lock's wait loop, on a registry that keeps answering "exists" and then
"not found" (the lock released between two calls, over and over)."""

from __future__ import annotations

import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    PERMISSION_DENIED,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from skinlesion.promotion.registry import RegistryError, find_champion, registry_lock

pytestmark = pytest.mark.code


class FlappingLock:
    """create says the lock exists; get says it does not: every time."""

    def __init__(self) -> None:
        self.calls = 0

    def create_registered_model(self, name, **kwargs):
        self.calls += 1
        raise MlflowException("exists", error_code=RESOURCE_ALREADY_EXISTS)

    def get_registered_model(self, name):
        raise MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST)


def test_wait_loop_sleeps_and_honours_its_deadline():
    client = FlappingLock()
    started = time.monotonic()
    with (
        pytest.raises(RegistryError, match="gave up waiting"),
        registry_lock(client, "m", timeout_s=0.3, poll_s=0.05),
    ):
        pass
    assert 0.3 <= time.monotonic() - started < 5
    assert client.calls < 20  # it slept between tries instead of spinning


class Unavailable:
    def get_model_version_by_alias(self, name, alias):
        raise MlflowException("503 Service Unavailable", error_code=TEMPORARILY_UNAVAILABLE)

    def create_registered_model(self, name, **kwargs):
        raise MlflowException("403 Forbidden", error_code=PERMISSION_DENIED)


def test_only_not_found_means_absent():
    with pytest.raises(RegistryError, match="looking up m@champion failed"):
        find_champion(Unavailable(), "m")
    with (
        pytest.raises(RegistryError, match=r"taking the lock m\.promotion-lock failed"),
        registry_lock(Unavailable(), "m"),
    ):
        pass
