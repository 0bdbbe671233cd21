"""Has anything changed since the champion was trained? The first step of a scheduled run.

A weekly run that finds the same data, parameters, code and image as the champion's
training would only spend GPU hours to reproduce it, so it stops early and says so. The
comparison uses the provenance tags that every registered version carries. Locally, DVC
makes the same decision from its own hashes (`dvc repro` skips unchanged stages).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skinlesion.data.versions import diff_since_run, list_folder
from skinlesion.promotion.registry import find_champion
from skinlesion.provenance import RunOrigin, changed_inputs, run_provenance

if TYPE_CHECKING:
    from skinlesion.config.params import Params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangeCheck:
    changed: bool
    reason: str
    champion_version: str | None = None
    current: dict[str, str] = field(default_factory=dict)
    data_changes: str = ""  # what changed in the data since the champion's training


def check_for_changes(
    client: Any,
    registered_model: str,
    params: Params,
    data_dir: str | Path,
    origin: RunOrigin | None = None,
) -> ChangeCheck:
    """Compare this run's inputs with the champion's; a registry error raises (a run that
    cannot tell must not skip training silently, nor train on a broken registry).
    ``origin.image`` is the image this run would train in, when the check itself runs in
    another one (the CPU image checks, the GPU image trains)."""
    listing = list_folder(Path(data_dir), params.data.workers)
    current = run_provenance(params, listing.version, origin)
    champion = find_champion(client, registered_model)
    if champion is None:
        return ChangeCheck(True, f"no champion of {registered_model} yet", None, current)
    differing = changed_inputs(champion.tags, current)
    if differing:
        what = ", ".join(differing)
        reason = f"changed since champion version {champion.version}: {what}"
        changes = ""
        if "data.version" in differing:
            diff = diff_since_run(champion.run_id, listing)
            changes = (
                diff.describe()
                if diff is not None
                else "the champion's training logged no data listing: no diff"
            )
            log.info("data since champion version %s: %s", champion.version, changes)
        return ChangeCheck(True, reason, champion.version, current, changes)
    reason = (
        f"nothing changed since version {champion.version}: same data "
        f"({current['data.version'][:12]}), params ({current['params.hash'][:12]}), code "
        f"({current['git_commit'][:12]}) and image ({current['image']})"
    )
    return ChangeCheck(False, reason, champion.version, current)


def run_change_check(
    params: Params, data_dir: str | Path, out: Path | None, origin: RunOrigin | None = None
) -> ChangeCheck:
    """The change check as a step runs it, from the CLI or a pipeline task: tracking set up
    from params, the registered model of ``promote.registered_model``, the result written
    as JSON to ``out`` when given and logged."""
    import mlflow

    from skinlesion.tracking import configure_tracking

    configure_tracking(params.tracking.experiment)
    check = check_for_changes(
        mlflow.MlflowClient(), params.promote.registered_model, params, data_dir, origin
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(asdict(check), indent=2) + "\n", encoding="utf-8")
    return check
