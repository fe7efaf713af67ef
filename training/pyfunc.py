"""The logged MLflow model: a ``pyfunc`` whose artifacts are the model bundle.

``mlflow.pyfunc.load_model(uri).predict(features)`` returns the same scores as
:meth:`training.bundle.ModelBundle.predict`. Scoring and serving use :func:`load_bundle`, which needs
only a model URI (``models:/strata@champion``, ``models:/strata/3``, ``runs:/<id>/model``, or a local
directory) and gives the bundle itself (with contributions for reason codes and the reference
distributions for monitoring).
"""

from __future__ import annotations

import logging
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from features.config import StrataConfig
from features.errors import ModelNotFoundError
from training.bundle import BUNDLE_FILE, ModelBundle

log = logging.getLogger(__name__)

BUNDLE_ARTIFACT = "bundle"
"""Key (and directory name) of the bundle in the logged model's artifacts."""
MODEL_NAME_IN_RUN = "model"
"""``name`` of the logged model inside its run."""

MODEL_CODE = Path(__file__).with_name("pyfunc_code.py")
"""The file logged as the model's code (it calls ``mlflow.models.set_model``)."""

_RUNTIME_PACKAGES = ("mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "pyarrow", "pydantic")


class StrataPyfuncModel(PythonModel):
    """MLflow ``PythonModel`` that scores a feature table with the bundle in its artifacts."""

    def load_context(self, context: Any) -> None:
        self.bundle = ModelBundle.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Scores (``user_id``, ``churn_risk``, ``conversion_prob``, ``predicted_value``, ``value_p10``,
        ``value_p90``) for a feature table with ``user_id`` and the bundle's features."""
        return self.bundle.predict(model_input)


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the logged model (the installed versions)."""
    reqs = []
    for pkg in _RUNTIME_PACKAGES:
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def log_bundle_model(bundle: ModelBundle, example_features: pd.DataFrame) -> Any:
    """Log ``bundle`` as a pyfunc model named ``model`` in the active run, with signature and input example.

    ``example_features`` is a feature table (a few rows are used). Returns MLflow's ``ModelInfo``.
    """
    from mlflow.models import infer_signature

    example = bundle.input_example(example_features, n=5)
    signature = infer_signature(example, bundle.predict(example))
    with tempfile.TemporaryDirectory(prefix="strata-bundle-") as tmp:
        path = bundle.save(Path(tmp) / BUNDLE_ARTIFACT)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            # Models from code: MLflow stores this file and runs it on load, no pickled Python object.
            python_model=str(MODEL_CODE),
            artifacts={BUNDLE_ARTIFACT: str(path)},
            signature=signature,
            input_example=example.head(2),
            pip_requirements=pip_requirements(),
        )


def _bundle_dir(root: Path) -> Path | None:
    for candidate in (root, root / "artifacts" / BUNDLE_ARTIFACT, root / BUNDLE_ARTIFACT):
        if (candidate / BUNDLE_FILE).exists():
            return candidate
    return None


def load_bundle(model_uri: str, config: StrataConfig | None = None) -> ModelBundle:
    """Load the :class:`ModelBundle` of a logged model.

    Parameters
    ----------
    model_uri : ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run_id>/model``, or a
        local directory holding a bundle or a downloaded model.
    config : if given, MLflow is first pointed at its tracking store (:func:`training.tracking.configure_tracking`);
        otherwise the current MLflow tracking URI is used.

    Raises
    ------
    ModelNotFoundError
        If the URI names no model (unknown alias, version or run) or the model holds no bundle.
    """
    from mlflow.exceptions import MlflowException

    local = Path(model_uri)
    if "://" not in model_uri and not model_uri.startswith(("models:", "runs:")):
        if not local.exists():
            raise ModelNotFoundError(f"{local}: no such model directory (or give a models:/ or runs:/ URI)")
        found = _bundle_dir(local)
        if found is None:
            raise ModelNotFoundError(f"{local}: no model bundle ({BUNDLE_FILE}) in this directory")
        return ModelBundle.load(found)
    if config is not None:
        from training.tracking import configure_tracking

        configure_tracking(config)
    with tempfile.TemporaryDirectory(prefix="strata-model-") as tmp:
        try:
            root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        except MlflowException as err:
            raise ModelNotFoundError(
                f"{model_uri}: no such model in {mlflow.get_tracking_uri()} ({err.message.splitlines()[0]}); "
                "train one with `strata train` and promote it with `strata promote`"
            ) from None
        found = _bundle_dir(root)
        if found is None:
            raise ModelNotFoundError(f"{model_uri}: the model holds no Strata bundle ({BUNDLE_FILE})")
        return ModelBundle.load(found)
