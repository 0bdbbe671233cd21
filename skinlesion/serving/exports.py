"""Exports of registered versions: made and logged to the version's training run
(`skinlesion export`), and fetched again by the server that runs them
(`skinlesion serve --runtime onnx`), so a served version and its export are one record."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from skinlesion.model.portable import EXPORT_DIR, MANIFEST_FILE, ExportError
from skinlesion.promotion.registry import VERSION_URI, RegistryError, ResolvedVersion, pin


def export_reference(
    reference: str, out: str | Path | None, log: bool
) -> tuple[Path, dict[str, Any]]:
    """Export a registered version (``models:/name/<v>`` or ``@alias``) or a ``.keras``
    file to ``out`` (default: a temporary folder); with ``log``, a registered version's
    export is logged to its training run as ``export/``."""
    from skinlesion.model.export import export_model
    from skinlesion.model.loading import load_model

    registered = VERSION_URI.match(reference) is not None
    if log and not registered:
        raise ExportError("--log needs a registered version (models:/name/<v> or @alias)")
    source = pin(reference)[0] if registered else str(Path(reference).resolve())
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="skinlesion-export-"))
    manifest = export_model(load_model(source), folder, source)
    if log:
        import mlflow

        match = VERSION_URI.match(source)
        assert match is not None  # pinned above
        client = mlflow.MlflowClient()
        version = client.get_model_version(match["name"], match["version"])
        client.log_artifacts(version.run_id, str(folder), EXPORT_DIR)
    return folder, manifest


def fetch_export(resolved: ResolvedVersion, into: str | Path) -> Path:
    """The export logged on ``resolved``'s training run, downloaded into ``into``; a
    version without one is refused with the command that makes it."""
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=resolved.run_id, artifact_path=EXPORT_DIR, dst_path=str(into)
        )
    except Exception as err:  # MLflow raises several kinds for a missing artifact
        raise RegistryError(
            f"{resolved.uri} has no export on its run {resolved.run_id} ({type(err).__name__}):"
            f" run `skinlesion export {resolved.uri} --log` first"
        ) from err
    if not (Path(local) / MANIFEST_FILE).is_file():
        raise RegistryError(f"{resolved.uri}: {EXPORT_DIR}/ holds no {MANIFEST_FILE}")
    return Path(local)


def export_pyfunc(folder: str | Path) -> Any:
    """The export in ``folder`` as a pyfunc model that answers like the registered one
    (the same request and answer columns), through ONNX Runtime: TensorFlow is never
    imported. The session and arrays are read into memory; ``folder`` may go after."""
    import mlflow.pyfunc

    from skinlesion.model.portable import PortableLesionClassifier
    from skinlesion.model.servable import signature

    with tempfile.TemporaryDirectory(prefix="skinlesion-export-") as tmp:
        saved = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            str(saved),
            python_model=PortableLesionClassifier(),
            artifacts={EXPORT_DIR: str(folder)},
            signature=signature(),
            pip_requirements=[],
        )
        return mlflow.pyfunc.load_model(str(saved))


def load_export(resolved: ResolvedVersion) -> Any:
    """The export logged on ``resolved``'s run, as :func:`export_pyfunc` serves it."""
    with tempfile.TemporaryDirectory(prefix="skinlesion-export-") as tmp:
        return export_pyfunc(fetch_export(resolved, Path(tmp) / "download"))
