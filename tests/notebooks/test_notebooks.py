"""The notebooks in ``notebooks/`` run end to end on small data, and are committed without outputs.

Each notebook is read into memory, gets small parameters injected after its ``parameters`` cell
(papermill style) and is executed with nbclient in a kernel whose working directory is ``tmp_path``;
its data files, MLflow store and charts go under ``tmp_path`` (the notebooks take ``WORKDIR``), and the
notebook files on disk are never written. Wall and kernel CPU time of each run are printed (``-s``):
they are measurements, not assertions.
"""

from __future__ import annotations

import ast
import base64
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
REPO_ROOT = NOTEBOOKS_DIR.parent
EXPLORE = "01_explore_customer_base.ipynb"
RETRAIN = "02_retraining_experiment.ipynb"
#: Quick training settings (the same as the training tests') for 1,500 demo users.
FAST_TRAINING: dict[str, Any] = {
    "num_boost_round": 80,
    "early_stopping_rounds": 10,
    "min_data_in_leaf": 20,
    "num_leaves": 15,
    "min_users": 100,
    "min_positives": 10,
}
#: What MLflow would leave in the repository if a notebook ignored its WORKDIR.
STRAY_OUTPUTS = ("mlflow.db", "mlruns", "mlartifacts")
CELL_TIMEOUT_S = 600


def _notebook_files() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def _parameter_names(nb: Any) -> set[str]:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    assert cells[0].cell_type == "code"
    names = set()
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"parameters cell: line {node.lineno} is not a plain assignment"
        names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


def _run(name: str, params: dict[str, Any], cwd: Path) -> Any:
    """Execute an in-memory copy of ``notebooks/<name>`` with ``params`` injected; return the executed copy."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    unknown = set(params) - _parameter_names(nb)
    assert not unknown, f"{name}: no such parameter(s) {sorted(unknown)}"
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"{name} {params}: wall {wall:.1f} s, kernel CPU {cpu:.1f} s")
    return nb


def _outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _stdout(nb: Any) -> str:
    return "".join(o["text"] for o in _outputs(nb) if o["output_type"] == "stream" and o["name"] == "stdout")


def _png_images(nb: Any) -> list[bytes]:
    return [
        base64.b64decode(o["data"]["image/png"])
        for o in _outputs(nb)
        if o["output_type"] in ("display_data", "execute_result") and "image/png" in o.get("data", {})
    ]


@pytest.fixture
def repo_untouched():  # noqa: ANN201
    """Fails the test if running a notebook added or changed files in notebooks/ or stray outputs in the repo."""
    notebooks = _snapshot(NOTEBOOKS_DIR)
    strays = {n for n in STRAY_OUTPUTS if (REPO_ROOT / n).exists()}
    yield
    assert _snapshot(NOTEBOOKS_DIR) == notebooks, "notebooks/ changed while a notebook ran"
    assert {n for n in STRAY_OUTPUTS if (REPO_ROOT / n).exists()} == strays, "a notebook wrote into the repository"


# ----------------------------------------------------------------------------- committed files


def test_notebooks_exist_with_a_parameters_cell() -> None:
    import nbformat

    names = [p.name for p in _notebook_files()]
    assert EXPLORE in names and RETRAIN in names
    for path in _notebook_files():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert {"N_USERS", "WORKDIR"} <= _parameter_names(nb), path.name


def test_notebooks_are_stored_without_outputs() -> None:
    """What git commits is the file on disk: no outputs, execution counts or injected parameters in it."""
    import nbformat

    problems = []
    for path in _notebook_files():
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
                problems.append(f"{path.name} cell {i}: injected parameters")
            if cell.cell_type != "code":
                continue
            if cell.get("outputs"):
                problems.append(f"{path.name} cell {i}: {len(cell['outputs'])} output(s)")
            if cell.get("execution_count") is not None:
                problems.append(f"{path.name} cell {i}: execution count {cell['execution_count']}")
    assert not problems, "strip them with `.venv/bin/python notebooks/strip_outputs.py`: " + "; ".join(problems)


def test_strip_outputs_cleans_an_executed_notebook(tmp_path: Path) -> None:
    """The stripping tool the failure message points to turns a run notebook back into the committed one."""
    import nbformat

    def strip(*args: str) -> int:
        tool = [sys.executable, "-B", str(NOTEBOOKS_DIR / "strip_outputs.py")]
        return subprocess.run([*tool, *args], capture_output=True, text=True, check=False).returncode

    committed = nbformat.read(NOTEBOOKS_DIR / EXPLORE, as_version=4)
    run = nbformat.read(NOTEBOOKS_DIR / EXPLORE, as_version=4)
    run.cells.insert(1, nbformat.v4.new_code_cell("N_USERS = 10", metadata={"tags": ["injected-parameters"]}))
    code = next(c for c in run.cells if c.cell_type == "code")
    code.execution_count = 3
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    code.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00Z"}
    path = tmp_path / EXPLORE
    nbformat.write(run, path)
    assert strip("--check", str(path)) == 1
    assert strip(str(path)) == 0
    assert strip("--check", str(path)) == 0
    assert nbformat.read(path, as_version=4).cells == committed.cells


# ----------------------------------------------------------------------------- execution


@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
def test_explore_notebook_runs_on_demo_data(tmp_path: Path, repo_untouched: None) -> None:
    work = tmp_path / "work"
    nb = _run(EXPLORE, {"N_USERS": 1500, "WORKDIR": str(work)}, tmp_path)
    text = _stdout(nb)
    # The demo files carry bad rows: the rejects ledger shows them, table by table.
    assert "orders: " in text and "rejected row(s)" in text
    assert "users known at 2024-12-31" in text
    assert "made no order in the next 90 days" in text
    images = _png_images(nb)
    # layer sizes, migrations, features per stage, rhythm, churn vs engagement, prospect conversion
    assert len(images) == 6
    assert all(img.startswith(b"\x89PNG") for img in images)
    assert (work / "data" / "orders.csv").exists() and (work / "data" / "events.csv").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
def test_explore_notebook_runs_on_cdnow(tmp_path: Path, cdnow_sample_path: Path, repo_untouched: None) -> None:
    nb = _run(
        EXPLORE, {"DATASET": "cdnow", "CDNOW_PATH": str(cdnow_sample_path), "WORKDIR": str(tmp_path / "work")}, tmp_path
    )
    text = _stdout(nb)
    assert "no row was rejected" in text
    assert "2,357 users known at 1998-07-01" in text  # the sample's 2,357 customers
    assert "no engagement events in this data set" in text
    assert len(_png_images(nb)) == 5  # no prospects, so no conversion chart


@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
def test_retraining_notebook_trains_compares_and_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_untouched: None
) -> None:
    import mlflow

    # Anything that ignored the notebook's own store would land here, not in the repository.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'fallback.db'}")
    work = tmp_path / "work"
    nb = _run(RETRAIN, {"N_USERS": 1500, "WORKDIR": str(work), "TRAINING": FAST_TRAINING}, tmp_path)
    text = _stdout(nb)
    assert "v1 (run " in text and "promoted=True: first promotion" in text
    decision = next(line for line in text.splitlines() if line.startswith("Promotion decision: "))
    promoted = "NOT promoted" not in decision
    assert "challenger v2 vs champion v1" in decision
    assert "evaluation users identical to the challenger's: True" in text
    assert len(_png_images(nb)) == 4  # calibration, lift, value deciles, refined-layer moves
    assert not (tmp_path / "fallback.db").exists()

    # The store the notebook left behind tells the same story.
    uri = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("retraining-notebook")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["challenger", "challenger-no-events", "champion"]
    variant = next(r for r in runs if r.info.run_name == "challenger-no-events")
    assert "churn_auc" in variant.data.metrics and variant.data.tags["strata.variant"] == "challenger-no-events"
    assert sorted(str(mv.version) for mv in client.search_model_versions("name = 'strata'")) == ["1", "2"]
    assert str(client.get_model_version_by_alias("strata", "champion").version) == ("2" if promoted else "1")
    tags = client.get_model_version("strata", "2").tags
    assert tags["promotion_decision"] == ("promoted" if promoted else "rejected")
    assert tags["promotion_reason"] in text
    assert experiment.artifact_location.startswith((work / "mlartifacts").resolve().as_uri())
