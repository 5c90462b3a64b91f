#!/usr/bin/env bash
# Make a Docker engine and the sandbox's Python image available on this host, then print the image name.
#
# Idempotent: installs docker.io and debootstrap with apt only when missing, starts dockerd only when
# `docker info` fails, and builds the image only when the engine does not have it. The image comes from
# no registry: debootstrap makes a minimal Debian bookworm with python3 from the mirror apt already uses,
# and `docker import` turns it into an image. Fails loudly when an engine cannot be had.
# Usage: bash .ci/docker.sh            (env: LLMENV_DOCKER_IMAGE to pick the image name)
set -euo pipefail

IMAGE="${LLMENV_DOCKER_IMAGE:-llmenv-sandbox-python:bookworm}"
LOG_DIR="${LLMENV_DOCKER_LOG_DIR:-/var/tmp/llmenv-docker}"
mkdir -p "$LOG_DIR"

die() {
  echo ".ci/docker.sh: $*" >&2
  exit 1
}
say() { echo ".ci/docker.sh: $*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  SUDO=(die "need root (or sudo) for:")
fi

# 1. packages
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} with apt"
  "${SUDO[@]}" apt-get update -qq >"$LOG_DIR/apt.log" 2>&1 || die "apt-get update failed, see $LOG_DIR/apt.log"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >>"$LOG_DIR/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed, see $LOG_DIR/apt.log"
fi
command -v docker >/dev/null || die "no docker client on PATH after installing docker.io"

# 2. the engine
wait_for_engine() {
  local pid=$1
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    [ -d "/proc/$pid" ] || return 1  # dockerd gave up (its reason is in the log)
    sleep 1
  done
  return 1
}

if ! docker info >/dev/null 2>&1; then
  # Sandbox containers use network none; the default bridge (which needs iptables) is tried first and
  # dropped when this host cannot make one.
  for flags in "" "--iptables=false --ip-masq=false --bridge=none"; do
    say "starting dockerd ${flags:-(default networking)}, log in $LOG_DIR/dockerd.log"
    # shellcheck disable=SC2086  # flags is a list of words
    "${SUDO[@]}" nohup dockerd $flags >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &  # nohup execs dockerd: $! is it
    pid=$!
    if wait_for_engine "$pid"; then
      break
    fi
    "${SUDO[@]}" kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    "${SUDO[@]}" rm -f /var/run/docker.pid
  done
  docker info >/dev/null 2>&1 || {
    tail -n 20 "$LOG_DIR/dockerd.log" >&2 || true
    die "dockerd did not come up within 60 s (log above, all of it in $LOG_DIR/dockerd.log)"
  }
fi

# 3. the image
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  lists=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] && lists+=("$f")
  done
  # the first non-security URI: a deb822 `URIs:` line, or a one-line `deb [options] URI suite` entry
  mirror=$(awk '/security/ { next }
    /^URIs:/ { print $2; exit }
    /^deb / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "${lists[@]}" /dev/null)
  [ -n "$mirror" ] || die "found no Debian mirror in /etc/apt/sources.list{,.d}"
  root=$(mktemp -d /var/tmp/llmenv-rootfs.XXXXXX)
  trap '"${SUDO[@]}" rm -rf "$root"' EXIT
  say "building $IMAGE with debootstrap from $mirror, log in $LOG_DIR/debootstrap.log"
  "${SUDO[@]}" debootstrap --variant=minbase --include=python3 bookworm "$root" "$mirror" \
    >"$LOG_DIR/debootstrap.log" 2>&1 || die "debootstrap failed, see $LOG_DIR/debootstrap.log"
  "${SUDO[@]}" rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  "${SUDO[@]}" tar -C "$root" -c . | docker import -c 'CMD ["python3"]' - "$IMAGE" >/dev/null \
    || die "docker import of $IMAGE failed"
fi
echo "$IMAGE"
