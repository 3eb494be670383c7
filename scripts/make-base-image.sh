#!/usr/bin/env bash
# Make a base image for Containerfile from the distribution's own packages, for machines
# whose container engine reaches no image registry: debootstrap a minimal Debian (Python,
# venv, LightGBM's OpenMP runtime, CA certificates) from the apt mirror this machine already
# uses, then import the tree as an image. A user with registry access needs none of this:
# the Containerfile's default base (python:3.11-slim-bookworm) is pulled as usual.
#
#   scripts/make-base-image.sh            # prints the image name, e.g. localhost/levibot-base:bookworm-1a2b3c4d
#   podman build --build-arg PYTHON_IMAGE="$(scripts/make-base-image.sh)" -f Containerfile .
#
# Cached: the image is tagged by the suite and a hash of this script and the package list,
# and an existing one is reused (about a minute to make, once). Needs root (debootstrap
# creates device nodes and chowns), podman or docker, and debootstrap.
# Environment: SUITE (default: this machine's Debian codename, else bookworm), MIRROR (default:
# the first Debian URI in /etc/apt/sources.list*), ENGINE (podman|docker), PACKAGES (extra).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[base] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
command -v "$ENGINE" >/dev/null || die "no container engine: install podman (apt-get install podman runc)"
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF=$PWD/containers/containers.conf
fi

# The suite: the host's, when the host is Debian (so the mirror surely serves it).
host_codename=$(. /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}" || true)
SUITE=${SUITE:-${host_codename:-bookworm}}

# The mirror: the first Debian archive the machine's apt already uses (deb822 `URIs:` or a
# one-line `deb URI suite ...`), so the build needs no network this machine lacks.
first_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '
      /^[[:space:]]*#/ { next }
      tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }
      $1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }
    ' "$f"
  done | grep -E '/debian/?$' | grep -v -- '-security' | head -n 1
}
MIRROR=${MIRROR:-$(first_mirror || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

# python3-venv: the image's venv (and pip, through ensurepip); python-is-python3: `python`,
# as in the python:*-slim images; libgomp1: LightGBM's OpenMP runtime; passwd: useradd.
PACKAGES="python3,python3-venv,python-is-python3,libgomp1,ca-certificates,passwd${PACKAGES:+,$PACKAGES}"
hash=$(printf '%s\n%s\n' "$SUITE" "$PACKAGES" | cat - "$0" | sha256sum | cut -c1-8)
IMAGE=${IMAGE:-localhost/levibot-base:$SUITE-$hash}

if "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
  say "reusing $IMAGE"
  echo "$IMAGE"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root (or build with the default base from a registry)"
command -v debootstrap >/dev/null || die "no debootstrap: apt-get install debootstrap"

root=$(mktemp -d "${TMPDIR:-/tmp}/levibot-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
say "debootstrap $SUITE from $MIRROR ($PACKAGES)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log" >&2; die "debootstrap failed (log: $root.log)"; }
rm -f "$root.log"
# Smaller and reproducible-ish: no package lists, caches or docs in the image (apt-get update
# brings the lists back when a build needs more packages).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*
say "importing as $IMAGE"
tar -C "$root" --numeric-owner -c . \
  | "$ENGINE" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE" >/dev/null
echo "$IMAGE"
