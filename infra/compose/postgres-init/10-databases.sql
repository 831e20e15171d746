-- Runs once, when the Postgres volume is first created: one database per service.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;  -- team mode's users and roles (the mlflow-team service)
