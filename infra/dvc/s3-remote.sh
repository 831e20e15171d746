#!/usr/bin/env bash
# Make an S3-compatible bucket (MinIO from infra/compose, or AWS S3) the default DVC remote of data/.
#
#   S3_ENDPOINT_URL=http://127.0.0.1:9000 infra/dvc/s3-remote.sh s3://dvc/instructue     # MinIO
#   infra/dvc/s3-remote.sh s3://my-bucket/instructue                                        # AWS S3
#   export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...                                # then:
#   instructue data push        # or: instructue ingest movielens-100k --push
#
# What goes where:
#   .dvc/config        (committed)   the remote's URL; it becomes the default remote
#   .dvc/config.local  (git-ignored) the endpoint of this machine's S3 service (S3_ENDPOINT_URL):
#                                    a laptop reaches MinIO at 127.0.0.1:9000, a container at minio:9000
#   the environment                  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, read by DVC at push/pull
# Credentials are never written to a file by this script.
# Needs the S3 plugin: pip install dvc-s3==3.3.0 (the worker image has it).
set -euo pipefail
url=${1:?usage: infra/dvc/s3-remote.sh s3://bucket/prefix   (S3_ENDPOINT_URL=... for MinIO)}
name=${DVC_REMOTE_NAME:-storage}
case "$url" in
  s3://?*) ;;
  *) echo "error: $url is not an s3://bucket/prefix URL" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")/../.." && pwd)
bin() { if [ -x "$here/.venv/bin/$1" ]; then echo "$here/.venv/bin/$1"; else command -v "$1"; fi; }
root=${INSTRUCTUE_ROOT:-$(git rev-parse --show-toplevel)}
cd "$root"

"$(bin instructue)" data remote "$url" --name "$name" --root "$root"
if [ -n "${S3_ENDPOINT_URL:-}" ]; then
  "$(bin dvc)" remote modify --local "$name" endpointurl "$S3_ENDPOINT_URL"
  echo "endpoint $S3_ENDPOINT_URL (in .dvc/config.local, this machine only)"
fi
if ! "$(bin python)" -c "import dvc_s3" 2>/dev/null; then
  echo "note: the S3 plugin is missing here; push/pull need: pip install dvc-s3==3.3.0" >&2
fi
if [ -z "${AWS_ACCESS_KEY_ID:-}" ]; then
  echo "note: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment before push/pull" >&2
fi
