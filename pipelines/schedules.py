"""Recurring runs kept one per name: scheduling again replaces, it never adds.

KFP identifies a recurring run by id, not by name, so `create_recurring_run` twice leaves
two schedules that both start a GPU training every week. Here a schedule is named (its
display name in its experiment) and :func:`upsert` makes that name mean one active
recurring run: the ones of that name are disabled, the new one is created, then the old
ones are deleted. Disabled before the new one exists, so there are never two active; if
creating it fails, the old ones are enabled again and nothing is deleted. Deleting a
recurring run does not stop the runs it already started, so a run in flight finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from skinlesion.errors import SkinlesionError


class ScheduleError(SkinlesionError, RuntimeError):
    """A schedule could not be replaced; the message says what state it was left in."""


@dataclass(frozen=True)
class Schedule:
    """One recurring run as the KFP API describes it."""

    id: str
    name: str
    cron: str
    enabled: bool
    created_at: str


def _pages(client: Any, experiment_id: str) -> Iterator[Any]:
    token = ""
    while True:
        page = client.list_recurring_runs(
            page_token=token, page_size=100, experiment_id=experiment_id
        )
        yield from page.recurring_runs or []
        token = page.next_page_token or ""
        if not token:
            return


def list_schedules(client: Any, experiment_id: str) -> list[Schedule]:
    """Every recurring run of the experiment, oldest first."""
    found = []
    for job in _pages(client, experiment_id):
        cron = getattr(getattr(job.trigger, "cron_schedule", None), "cron", "") or ""
        found.append(
            Schedule(
                id=job.recurring_run_id,
                name=job.display_name,
                cron=cron,
                enabled=str(job.mode or job.status or "").upper() in ("ENABLE", "ENABLED"),
                created_at=str(job.created_at or ""),
            )
        )
    return sorted(found, key=lambda s: s.created_at)


def upsert(
    client: Any, experiment_id: str, name: str, create: Callable[[], Any]
) -> tuple[Any, list[str]]:
    """Make ``name`` one active recurring run, the one ``create`` makes; returns it and
    the ids of the recurring runs of that name it replaced (deleted)."""
    old = [s for s in list_schedules(client, experiment_id) if s.name == name]
    enabled = [s.id for s in old if s.enabled]
    for job_id in enabled:
        client.disable_recurring_run(job_id)
    try:
        job = create()
    except Exception as err:  # the API client raises many types
        for job_id in enabled:
            client.enable_recurring_run(job_id)
        raise ScheduleError(
            f"could not create the schedule {name!r} ({type(err).__name__}: {err}); "
            f"the {len(enabled)} it would have replaced are enabled again"
        ) from err
    for schedule in old:
        client.delete_recurring_run(schedule.id)
    return job, [s.id for s in old]
