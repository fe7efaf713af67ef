"""Baseline for benchmarks/bench_api.py: a minimal FastAPI app serving the raw LightGBM churn booster.

``POST /predict {"features": [float, ...]}`` -> ``{"churn_score": p}``: one ``Booster.predict`` on the
feature vector (categorical features as their integer codes), nothing else: no feature lookup, no
layers, reasons or interventions, no authentication. It is what "just serve the model" costs, the
floor the Strata service is compared against.

Run: ``STRATA_BASELINE_MODEL=<booster.txt> uvicorn fastapi_baseline:create_app --factory --app-dir benchmarks``.
"""

from __future__ import annotations

import os

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

MODEL_ENV = "STRATA_BASELINE_MODEL"


class Vector(BaseModel):
    """One feature vector in the booster's column order."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    features: list[float | None]


class Score(BaseModel):
    """The booster's output for the vector (probability of churn over the horizon)."""

    churn_score: float


def create_app(model_file: str | None = None) -> FastAPI:
    """The FastAPI app for the booster saved at ``model_file`` (default: ``$STRATA_BASELINE_MODEL``)."""
    import lightgbm as lgb

    path = model_file or os.environ[MODEL_ENV]
    booster = lgb.Booster(model_file=path)
    n_features = booster.num_feature()
    app = FastAPI(title="LightGBM baseline", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/predict")
    async def predict(vector: Vector) -> Score:
        x = np.asarray([[np.nan if v is None else v for v in vector.features]], dtype=np.float64)
        if x.shape[1] != n_features:
            from fastapi import HTTPException

            raise HTTPException(422, f"expected {n_features} features, got {x.shape[1]}")
        return Score(churn_score=float(booster.predict(x, num_threads=1)[0]))

    return app
