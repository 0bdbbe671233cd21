"""Every command answers --help, and the commands users rely on keep their names."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from skinlesion.cli import app

pytestmark = pytest.mark.code

COMMANDS = [
    [],
    ["data"],
    ["data", "download"],
    ["data", "synth"],
    ["validate"],
    ["split"],
    ["check-leakage"],
    ["eda"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_eda_writes_plots(synth_dir, tmp_path):
    from tests.conftest import ROOT

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
