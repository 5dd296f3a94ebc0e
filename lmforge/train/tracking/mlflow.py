"""`--report-to mlflow`: an MLflow run through `MlflowClient` (no global active run), in the
store MLFLOW_TRACKING_URI names, else a SQLite store in the model directory (OUT/mlflow.db, its
artifacts in OUT/mlartifacts/: MLflow's file store is in maintenance mode). The experiment is
MLFLOW_EXPERIMENT_NAME, else "lmforge"; the run is named after --out. Settings are the run's
params, train and eval rows its metrics, samples and warnings text artifacts
(`samples/step_0000100.txt`). A resumed run continues the same MLflow run (its id is in
OUT/tracking.json) and adds only params it did not have (MLflow's params never change)."""

from __future__ import annotations

import os
import time
from typing import Any

from .base import Tracker, save_id, saved_id

MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow.db", "mlartifacts"
MAX_PARAM_LENGTH = 6000                  # MLflow's limit on a param's value


class MLflowTracker(Tracker):
    name = "mlflow"

    def start(self, run_name: str, settings: dict[str, Any], step: int) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.out / MLFLOW_DB).resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        saved = saved_id(self.out, self.name) if step else None
        if isinstance(saved, dict) and saved.get("tracking_uri") == uri:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            known = self.client.get_run(self.run_id).data.params
        else:
            run = self.client.create_run(self._experiment_id(), run_name=run_name)
            self.run_id, known = run.info.run_id, {}
            save_id(self.out, self.name, {"tracking_uri": uri, "run_id": self.run_id})
        params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in settings.items() if k not in known]
        self.client.log_batch(self.run_id, params=params)

    def _experiment_id(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "lmforge"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        own_store = not os.environ.get("MLFLOW_TRACKING_URI")     # ours: its artifacts beside it, not in the cwd
        location = (self.out / MLFLOW_ARTIFACTS).resolve().as_uri() if own_store else None
        return self.client.create_experiment(name, artifact_location=location)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def text(self, name: str, step: int, text: str) -> None:
        self.client.log_text(self.run_id, text, f"{name}/step_{step:07d}.txt")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
