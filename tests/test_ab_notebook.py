"""The A/B analysis notebook runs top to bottom with the small budget (issue 33), as the training notebook does."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "ab_analysis.ipynb"


def test_ab_analysis_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKER_NOTEBOOK_BUDGET", "small")
    monkeypatch.setenv("RANKER_NOTEBOOK_OUT", str(tmp_path / "run"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "budget=small" in outputs
    assert "sessions served per arm" in outputs and "sample ratio:" in outputs and "ok" in outputs  # a 50/50 split that held
    assert "CUPED purchases_per_session reversed vs control" in outputs and "variance reduction" in outputs
    assert "sequential reversed vs control: always-valid p" in outputs and "P(best)" in outputs
    # the planted regression is found: the reversed policy's purchases are significantly lower
    report_line = next(line for line in outputs.splitlines() if line.strip().startswith("reversed vs control"))
    assert "SIGNIFICANT" in report_line and "-" in report_line.split(":")[1]
    images = [output for cell in notebook.cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    assert len(images) == 2
    assert sorted(path.name for path in (tmp_path / "run" / "plots").iterdir())
    assert "stopped" in outputs
