-- Run once by the postgres image on an empty volume: MLflow gets its own database next to the
-- Optuna study database (POSTGRES_DB), owned by the same user.
CREATE DATABASE mlflow;
