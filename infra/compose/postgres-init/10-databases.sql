-- Runs once, when the Postgres volume is first created: one database per service.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
