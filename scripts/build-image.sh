#!/usr/bin/env bash
# Build levibot's image with podman or docker, whichever is present (`make image` runs this).
#
#   scripts/build-image.sh                 # CPU image (Containerfile); prints the image name
#   scripts/build-image.sh --gpu           # GPU image (Containerfile.gpu)
#
# The base: BASE_IMAGE when set; else the Containerfile's default when the engine has it or
# can pull it; else one made from Debian's packages by scripts/make-base-image.sh (no registry
# is needed, only the apt mirror the machine already uses).
# pip inside the build: the host's CA bundle and pip configuration go in as build secrets
# (ids `cacert`, `pipconf`), mounted read-only while pip runs and never stored in a layer.
# The build runs with --network host (the host's proxy and DNS, no bridge set-up needed).
# Cached: the image is also tagged `levibot[-gpu]:src-<hash>` by a hash of the base and of
# every file the build reads; an image with that tag is reused without building (FORCE=1
# builds anyway). The version tag (levibot:0.1.0, as deploy/ names it) moves to the result.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[image] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

gpu=
[ "${1:-}" = --gpu ] && gpu=1
if [ -n "$gpu" ]; then
  file=Containerfile.gpu name=levibot-gpu arg=CUDA_IMAGE
else
  file=Containerfile name=levibot arg=PYTHON_IMAGE
fi

ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
command -v "$ENGINE" >/dev/null \
  || die "neither podman nor docker is installed (apt-get install podman runc; see docs/operations.md)"
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF=$PWD/containers/containers.conf
fi
PY=${PYTHON:-$(command -v python3 || command -v python)}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)

# -- the base ---------------------------------------------------------------------------------
default_base=$(sed -n "s/^ARG $arg=//p" "$file" | head -n 1)
base_args=()
if [ -n "${BASE_IMAGE:-}" ]; then
  base=$BASE_IMAGE
elif "$ENGINE" image inspect "$default_base" >/dev/null 2>&1 \
  || "$ENGINE" pull -q "$default_base" >/dev/null 2>&1; then
  base=$default_base
else
  say "no registry serves $default_base: making a base from Debian's packages"
  base=$(scripts/make-base-image.sh)
fi
base_args+=(--build-arg "$arg=$base")
# The GPU file builds its wheel on a Python image too; without a registry, on the same base.
if [ -n "$gpu" ] && ! "$ENGINE" image inspect python:3.11-slim-bookworm >/dev/null 2>&1; then
  base_args+=(--build-arg "PYTHON_IMAGE=${PYTHON_BASE_IMAGE:-$(scripts/make-base-image.sh)}")
fi

# -- pip's view of the package index: the host's CA bundle and pip configuration ---------------
secrets=$(mktemp -d "${TMPDIR:-/tmp}/levibot-build.XXXXXX")
trap 'rm -rf "$secrets"' EXIT
cacert=${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}
if [ -r "$cacert" ]; then cp "$cacert" "$secrets/cacert"; else : >"$secrets/cacert"; fi
# `pip config list` merges every pip.conf pip reads (and PIP_* variables are added), minus
# what names this machine's files (cert: the secret above; find-links, constraints, file://
# indexes), which would not exist inside the build.
"$PY" - "$secrets/pipconf" <<'EOF'
import ast
import os
import subprocess
import sys

try:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
except OSError:
    out = ""
values = {}
for line in out.splitlines():
    key, sep, raw = line.partition("=")
    section, dot, option = key.partition(".")
    if sep and dot and section in ("global", "install", "wheel", "download"):
        values[option] = ast.literal_eval(raw)
for env in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT"):
    if os.environ.get(env):
        values[env[4:].lower().replace("_", "-")] = os.environ[env]
lines = ["[global]"]
for option, value in values.items():
    if option in ("cert", "constraint", "requirement", "find-links", "cache-dir", "log"):
        continue
    kept = [v for v in value.split() if not v.startswith(("/", "file:"))]
    if kept:
        lines.append(f"{option} = {' '.join(kept)}")
with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n")
EOF

# -- cache: a tag from the hash of everything the build reads ----------------------------------
base_id=$("$ENGINE" image inspect --format '{{.Id}}' "$base" 2>/dev/null || echo "$base")
hash=$(
  {
    printf '%s\n%s\n' "$base_id" "$file"
    cat "$file" .containerignore "$secrets/pipconf"
    git ls-files -z -co --exclude-standard -- pyproject.toml README.md levibot sidecars \
      | grep -zv -E '(__pycache__|\.pyc$|\.egg-info)' | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-12
)
image=localhost/$name:src-$hash
if [ -z "${FORCE:-}" ] && "$ENGINE" image inspect "$image" >/dev/null 2>&1; then
  say "up to date: $image"
else
  say "building $image from $file on $base with $ENGINE"
  start=$(date +%s)
  format=(); [ "$ENGINE" = podman ] && format=(--format docker)  # keeps HEALTHCHECK (OCI has none)
  "$ENGINE" build --network host "${format[@]}" -f "$file" "${base_args[@]}" \
    --secret "id=cacert,src=$secrets/cacert" --secret "id=pipconf,src=$secrets/pipconf" \
    -t "$image" . >&2
  say "built in $(($(date +%s) - start)) s"
fi
"$ENGINE" tag "$image" "$name:$version"
# Older src-* tags of this image only hold disk: untag them (shared layers stay), then drop
# the untagged images our Containerfiles made (replaced images, old build stages; the label
# keeps anyone else's untouched). The dependency layer under the current image stays, so the
# next build after a code change still skips pip's downloads; only the short build stage
# runs again. Without this, every rebuild here left about 150 MB behind.
"$ENGINE" images --format '{{.Repository}}:{{.Tag}}' \
  | grep -E "^(localhost/)?$name:src-" | grep -vx "$image" | xargs -r "$ENGINE" rmi >/dev/null 2>&1 || true
"$ENGINE" image prune -f --filter label=io.levibot.build >/dev/null 2>&1 || true
echo "$image"
