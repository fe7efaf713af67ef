"""The model code MLflow logs with every Strata model (MLflow "models from code").

MLflow copies this file into the logged model and runs it on load instead of unpickling a Python object,
so no cloudpickle of :class:`training.pyfunc.StrataPyfuncModel` is stored. The model's state is the bundle in
its artifacts, read by ``load_context``. Loading needs the ``strata`` package installed, as before.
"""

import mlflow

from training.pyfunc import StrataPyfuncModel

mlflow.models.set_model(StrataPyfuncModel())
