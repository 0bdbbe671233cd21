"""Every command answers --help, and the commands users rely on keep their names."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from skinlesion.cli.main import command_line

pytestmark = pytest.mark.code
app = command_line()

# The commands users and the docs rely on: renaming one breaks scripts and DVC stages.
NAMED = {
    "data download",
    "data synth",
    "validate",
    "split",
    "check-leakage",
    "check-changes",
    "eda",
    "oversample",
    "train",
    "evaluate",
    "promote",
    "predict",
    "serve",
    "upgrade-model",
    "tune",
    "tune apply",
    "pipeline compile",
    "pipeline submit",
    "pipeline schedule",
    "infra bootstrap-buckets",
}


def _command_paths() -> list[list[str]]:
    """Every command and group of the installed command line, found by walking it."""
    import typer

    def walk(command: Any, path: list[str]) -> list[list[str]]:
        found = [path]
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                found += walk(sub, [*path, name])
        return found

    return walk(typer.main.get_command(command_line()), [])


def test_the_named_commands_exist():
    present = {" ".join(path) for path in _command_paths()}
    assert present >= NAMED, sorted(NAMED - present)


@pytest.mark.parametrize("command", _command_paths(), ids=lambda c: " ".join(c) or "root")
def test_help(command):
    result = CliRunner().invoke(command_line(), [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_the_console_script_has_the_plugin_commands():
    """`pipeline` comes from an entry point of the installed package, not an import."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "skinlesion"
    result = subprocess.run([str(script), "pipeline", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "compile" in result.stdout and "schedule" in result.stdout


def test_eda_writes_plots(synth_dir, tmp_path):
    from tests.helpers import ROOT

    params = str(ROOT / "params.yaml")
    runner = CliRunner()
    manifest = tmp_path / "m.csv"
    assert (
        runner.invoke(
            app, ["split", "--data-dir", str(synth_dir), "--out", str(manifest), "--params", params]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        [
            "eda",
            "--manifest",
            str(manifest),
            "--data-dir",
            str(synth_dir),
            "--out-dir",
            str(tmp_path / "eda"),
            "--params",
            params,
        ],
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in (tmp_path / "eda").glob("*.png"))
    assert len(pngs) == 6
    assert "samples_per_class.png" in (tmp_path / "eda/summary.md").read_text()


@pytest.mark.parametrize("command", [["check-changes"], ["upgrade-model", "models:/m@champion"]])
def test_an_unreachable_registry_is_one_line_that_names_it(command, monkeypatch, synth_dir):
    """No traceback: the server's address, and that the registry is as it was."""
    from tests.helpers import ROOT, free_port

    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    args = [*command, "--params", str(ROOT / "params.yaml")]
    if command[0] == "check-changes":
        args += ["--data-dir", str(synth_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.exception.__class__ is SystemExit
    [line] = [text for text in result.output.splitlines() if text.strip()]
    assert f"MLflow at {server} cannot be reached" in line
    assert line.endswith("the registry is unchanged")
