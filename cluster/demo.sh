#!/usr/bin/env bash
# The demo behind `make demo` (run it through make, which sets the environment):
# real ACL papers -> documents Parquet in the local S3 -> summarization submitted with
# `ray job submit` to a local Ray head -> a few summaries and the throughput line.
# It stops the services it started and leaves running the ones it found running.
set -euo pipefail
DEMO_PREFIX=${DEMO_PREFIX:-s3://rayfleet/demo}
DEMO_DOCS=${DEMO_DOCS:-16}
started_s3=0
started_ray=0
cleanup() {
  if [ "$started_ray" = 1 ]; then make --no-print-directory ray-down; fi
  if [ "$started_s3" = 1 ]; then python -m cluster.local_s3 down; fi
}
trap cleanup EXIT

if ! python -c "from cluster.local_s3 import LocalS3; import sys; from pathlib import Path; sys.exit(0 if LocalS3(Path('.data/s3')).is_up() else 1)"; then
  started_s3=1
fi
python -m cluster.local_s3 up >/dev/null  # says what it did on stderr; stdout is the export lines
if ! ray status --address "127.0.0.1:${RAY_PORT:-6379}" >/dev/null 2>&1; then
  started_ray=1
fi
make --no-print-directory ray-up

echo "== building $DEMO_DOCS real documents (ACL papers) into $DEMO_PREFIX/documents"
python -m jobs.demo_documents output="$DEMO_PREFIX/documents" count="$DEMO_DOCS"

echo "== ray job submit: summarizing"
ray job submit --address "$RAY_ADDRESS_HTTP" --working-dir . -- \
  python -m jobs.summarize input="$DEMO_PREFIX/documents" output="$DEMO_PREFIX/summaries"

echo "== results"
python -m jobs.show_summaries summaries="$DEMO_PREFIX/summaries" documents="$DEMO_PREFIX/documents"
