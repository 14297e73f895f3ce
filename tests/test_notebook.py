"""The offline training notebook runs top to bottom with the small budget."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "train_offline.ipynb"


def test_train_offline_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKER_NOTEBOOK_BUDGET", "small")
    monkeypatch.setenv("RANKER_NOTEBOOK_OUT", str(tmp_path / "run"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", []))
    assert "budget=small" in outputs
    for name in ("ppo", "lambdamart", "linear_bandit", "oracle"):
        assert name in outputs
    images = [output for cell in notebook.cells for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    assert len(images) == 2
    assert (tmp_path / "run" / "manifest.json").exists() and (tmp_path / "run" / "evaluation" / "learning_curve.png").exists()
