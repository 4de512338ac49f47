#!/usr/bin/env bash
# How long `tc-ami cleanup` takes for 1,000 images over 3 regions in the sandbox.
#
#   benches/cleanup_scale.sh [RUNS] [IMAGES]      defaults: 5 runs, 1000 images
#
# Each run resets the EC2 sandbox, registers IMAGES images of the worker type `w` (each with
# two snapshots, a day apart, spread over us-west-2, us-east-1 and eu-central-1) through
# POST /_sandbox/seed-owned-images, then times `tc-ami cleanup -w w --keep 3 --yes` (wall
# clock, the whole process: reading the pools, listing, planning, deleting). Prints each run
# and the median. Measures only: nothing is asserted about the time (tests/cleanup.rs checks
# that the result is right).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
runs=${1:-5}
images=${2:-1000}
regions=(us-west-2 us-east-1 eu-central-1)

py=$(scripts/ensure-venv)
cargo build --quiet
tc_ami="$root/target/debug/tc-ami"

work=$(mktemp -d)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT

# Starts a stand-in (in this shell, so that `stop` knows its pid); sets `url` from its READY line.
start() {
  local name=$1; shift
  mkfifo "$work/$name.fifo"
  "$py" "$@" > "$work/$name.fifo" 2> "$work/$name.log" &
  pids+=($!)
  local line
  if ! read -r -t 60 line < "$work/$name.fifo" || [[ $line != READY\ * ]]; then
    echo "bench: $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
  fi
  url=${line#READY }
}

start ec2 sandbox/ec2_sandbox.py --port 0 --parent-pid $$
ec2_url=$url
start taskcluster sandbox/tc_emulator.py --port 0 --quiet --seed sandbox/seed/taskcluster.json
tc_url=$url

mkdir -p "$work/config/worker-types"
cp base-ami.txt "$work/config/"
cat > "$work/config/worker-types/w.toml" <<TOML
worker_pool_id = "proj-servo/win2016"
build_region = "us-west-2"
regions = ["us-east-1", "eu-central-1"]
instance_type = "c5.4xlarge"
TOML

export AWS_ENDPOINT_URL=$ec2_url AWS_REGION=us-west-2 AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=sandbox AWS_SECRET_ACCESS_KEY=sandbox
export TASKCLUSTER_ROOT_URL=$tc_url TASKCLUSTER_CLIENT_ID=tc-ami-admin
export TASKCLUSTER_ACCESS_TOKEN=sandbox-only-fake-token-tc-ami-admin-0000000
unset AWS_PROFILE TASKCLUSTER_CERTIFICATE

post() {
  "$py" - "$ec2_url$1" "$2" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST", headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=120) as r:
    json.load(r)
PY
}

times=()
for run in $(seq 1 "$runs"); do
  post /_sandbox/reset '{}'
  for i in "${!regions[@]}"; do
    n=$(( images / 3 + (i < images % 3 ? 1 : 0) ))
    post /_sandbox/seed-owned-images "{\"region\": \"${regions[$i]}\", \"count\": $n, \"name_prefix\": \"tc-ami-w-\", \"step_seconds\": 86400, \"creation_date\": \"2020-01-01T00:00:00Z\", \"snapshots_per_image\": 2, \"tags\": {\"tc-ami:worker-type\": \"w\", \"tc-ami:build-id\": \"b{n}\"}}"
  done
  start_ns=$(date +%s%N)
  "$tc_ami" -C "$work/config" --json cleanup -w w --keep 3 --yes > "$work/out.json" 2> "$work/err.txt" \
    || { echo "bench: cleanup failed:" >&2; tail -5 "$work/err.txt" >&2; exit 1; }
  end_ns=$(date +%s%N)
  secs=$("$py" -c "print(f'{($end_ns - $start_ns) / 1e9:.2f}')")
  deleted=$("$py" -c "import json; d = json.load(open('$work/out.json')); print(d['summary']['images_deleted'], d['summary']['image_snapshots_deleted'])")
  echo "run $run: ${secs}s (deleted $deleted: images snapshots)"
  if [ -n "${VERBOSE:-}" ]; then grep -E '^20[0-9-]+T|^deleted' "$work/err.txt" >&2 || true; fi
  times+=("$secs")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
echo "median of $runs runs, $images images over ${#regions[@]} regions: ${median}s"
