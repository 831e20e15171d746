# MLflow tracking + registry server: Postgres backend store, S3-compatible (MinIO) artifact store.
# Built by infra/compose/docker-compose.yml; the versions match the project's environment.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN pip install mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.44.5
RUN useradd --create-home --uid 10001 mlflow
USER mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
