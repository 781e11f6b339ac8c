#!/usr/bin/env bash
# Try glacierfs on this machine without an AWS account and without anything but the Rust
# toolchain: builds glacierfs and the project's Glacier emulator (release), starts the emulator
# as a local endpoint (Glacier and S3, jobs done in seconds), with a demo vault of archives
# named the way other tools name them, mounts it, and prints a tour to paste.
#
#   scripts/try-local.sh [MOUNTPOINT]   # mount (default: target/try-local/mnt)
#   scripts/try-local.sh --stop         # unmount, stop the emulator, remove the demo state
#
# GLACIERFS_BIN and GLACIER_EMULATOR_BIN use those binaries instead of building them;
# GLACIERFS_TRY_JOB_DELAY sets how long each retrieval or inventory job takes (default 10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/target/try-local"
delay=${GLACIERFS_TRY_JOB_DELAY:-10}

stop() {
  if [ -f "$state/mountpoint" ]; then
    mnt=$(cat "$state/mountpoint")
    if mountpoint -q "$mnt" 2>/dev/null; then
      umount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
  fi
  # The daemon exits once its mount is gone; give it a moment, then make sure.
  if [ -f "$state/cache/lock" ]; then
    pid=$(cat "$state/cache/lock" 2>/dev/null || true)
    for _ in $(seq 1 50); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  fi
  if [ -f "$state/emulator.pid" ]; then
    kill "$(cat "$state/emulator.pid")" 2>/dev/null || true
  fi
  rm -rf "$state"
  echo "try-local: stopped"
}

if [ "${1:-}" = "--stop" ]; then
  stop
  exit 0
fi
if [ -d "$state" ]; then
  echo "try-local: a previous try-out is still set up; stopping it first"
  stop
fi
mnt=${1:-$state/mnt}
mkdir -p "$state" "$mnt"
mnt=$(cd "$mnt" && pwd)

if [ -n "${GLACIERFS_BIN:-}" ] && [ -n "${GLACIER_EMULATOR_BIN:-}" ]; then
  # Binaries built already (the test suite passes its own).
  bin=$(cd "$(dirname "$GLACIERFS_BIN")" && pwd)/$(basename "$GLACIERFS_BIN")
  emulator=$GLACIER_EMULATOR_BIN
else
  echo "try-local: building glacierfs and the Glacier emulator (release; the first build takes a while)..."
  cargo build --release --quiet -p glacierfs -p glacier-emulator
  bin="$root/target/release/glacierfs"
  emulator="$root/target/release/glacier-emulator"
fi

# The emulator prints its URL on stdout once it accepts connections.
"$emulator" --job-delay "$delay" --bucket demo-bucket --demo demo \
  >"$state/emulator.url" 2>"$state/emulator.log" &
echo $! >"$state/emulator.pid"
for _ in $(seq 1 100); do
  [ -s "$state/emulator.url" ] && break
  sleep 0.1
done
endpoint=$(head -n1 "$state/emulator.url")
if [ -z "$endpoint" ]; then
  echo "try-local: the emulator did not start:" >&2
  cat "$state/emulator.log" >&2
  stop >/dev/null
  exit 1
fi
export AWS_ACCESS_KEY_ID=AKIDEMULATOR AWS_SECRET_ACCESS_KEY=emulator-secret AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true

echo "$mnt" >"$state/mountpoint"
"$bin" mount --endpoint-url "$endpoint" --cache-dir "$state/cache" --poll-interval 2s \
  --write-back-delay 2s "$mnt"

cat <<MSG

glacierfs is mounted at $mnt, on the project's Glacier emulator at $endpoint
(every retrieval and inventory job takes $delay s there; Glacier takes hours).

A tour to paste, step by step:

  export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY AWS_REGION=$AWS_REGION
  G=$bin M=$mnt

  ls \$M                                    # vaults are directories
  ls -lR \$M/demo                           # empty at first: the inventory job takes $delay s
  getfattr -d \$M/demo/docs/readme.txt       # archive id, tree hash, state "cold"
  cat \$M/demo/docs/readme.txt               # cold: "Resource temporarily unavailable", a job starts
  cat \$M/demo/.jobs                         # the job, running
  sleep $delay; cat \$M/demo/docs/readme.txt   # $delay s later it reads, checked against its tree hash

  head -c 40M /dev/urandom > /tmp/big.bin
  cp /tmp/big.bin \$M/demo/                  # staged on local disk at once
  \$G sync --wait \$M/demo                     # uploaded as a multipart upload (16 MiB parts): seconds
  \$G status --cache-dir $state/cache

  cat \$M/demo/.lock                         # the vault lock: none yet

  \$G export --dry-run --s3-endpoint-url $endpoint \$M/demo s3://demo-bucket/demo
  \$G export --s3-endpoint-url $endpoint \$M/demo s3://demo-bucket/demo   # one job per archive: ~$delay s

The daemon's log: $state/cache/glacierfs.log
Stop everything with: scripts/try-local.sh --stop
MSG
