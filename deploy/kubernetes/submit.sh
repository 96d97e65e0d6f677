#!/usr/bin/env bash
# Runs the Indexed Job and merges its pods' results:
#   deploy/kubernetes/submit.sh [START_IN_SECONDS]   (default 60: time for every pod to be scheduled and pulled)
# Needs kubectl pointed at the cluster and the image `sockstorm:latest` where its nodes can
# pull it (edit job.yaml), and a local sockstorm binary for the merge.
set -euo pipefail
cd "$(dirname "$0")"
start_in=${1:-60}
start_at=$(date -u -d "+${start_in} seconds" +%Y-%m-%dT%H:%M:%SZ)
kubectl delete job sockstorm --ignore-not-found
kubectl apply -f configmap.yaml
# Every pod waits for the same instant, with its plan built and its shards pinned.
sed "s/2026-01-01T00:00:00Z/${start_at}/" job.yaml | kubectl apply -f -
echo "segments start at ${start_at}"
kubectl wait --for=condition=complete --timeout=2h job/sockstorm \
  || kubectl wait --for=condition=failed --timeout=1s job/sockstorm || true
# Each pod's log is its result document (the summary went to stderr, which kubectl logs also
# shows: merge skips lines that are not JSON).
kubectl logs -l job-name=sockstorm --tail=-1 --max-log-requests=64 > results.log
sockstorm merge - -o merged.json < results.log
echo "merged result: $(pwd)/merged.json"
