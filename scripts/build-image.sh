#!/usr/bin/env bash
# Build the proxy's image without a Docker daemon, then smoke-test it (docs/deploy.md).
#
#   sudo scripts/build-image.sh [--tag REF] [--base IMAGE] [--no-smoke] [--keep]
#
# - buildah with the vfs storage driver and chroot isolation: no daemon, no overlay mounts,
#   no user namespaces needed; its storage lives under $STRANGLER_IMAGE_CACHE (default
#   /var/tmp/strangler-image), apart from any other buildah or podman storage.
# - The base image: --base IMAGE when a registry or a local image is at hand (for example
#   python:3.11-slim); otherwise a Debian bookworm root file system made by debootstrap from
#   the Debian mirror apt uses here (python3.11, python3-venv, ca-certificates), imported
#   as localhost/strangler-base:bookworm-python3.11 and cached. The Dockerfile's
#   PYTHON_IMAGE build argument points at it.
# - Certificates: CA certificates this host adds (/usr/local/share/ca-certificates/*.crt,
#   e.g. a TLS-intercepting egress proxy) are added to the debootstrapped base, so that the
#   builder stage's pip can reach PyPI through it. Set STRANGLER_IMAGE_HOST_CA=0 to skip.
# - The smoke test (scripts/image_smoke.py) runs the image's entry point from its root file
#   system, mounted read-only, as uid 65532, with chroot in a private mount namespace:
#   the proxy answers, routes to the core and to legacy, obeys a kill switch set with the
#   image's own `strangler kill`, passes its HEALTHCHECK and drains on SIGTERM.
#
# Needs root, buildah, debootstrap (for the local base) and python3 on the host.
set -euo pipefail

TAG="localhost/checkout-strangler:dev"
BASE=""
SMOKE=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG="$2"; shift 2 ;;
        --base) BASE="$2"; shift 2 ;;
        --no-smoke) SMOKE=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${STRANGLER_IMAGE_CACHE:-/var/tmp/strangler-image}"
SUITE="bookworm"
LOCAL_BASE="localhost/strangler-base:${SUITE}-python3.11"
BUILDAH=(buildah --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver vfs)

step() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { echo "build-image: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (buildah with chroot isolation, debootstrap, mounts)"
command -v buildah >/dev/null || die "buildah not found: apt-get install buildah"
mkdir -p "$CACHE"

debian_mirror() {
    # The first Debian mirror apt uses (deb822 sources or a classic sources.list).
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_local_base() {
    command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
    local rootfs="$CACHE/rootfs-$SUITE" mirror
    mirror="$(debian_mirror)"
    if [ ! -x "$rootfs/usr/bin/python3.11" ]; then
        step "debootstrap $SUITE from $mirror into $rootfs"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$rootfs" "$mirror"
    fi
    local extra_ca=0
    if [ "${STRANGLER_IMAGE_HOST_CA:-1}" = 1 ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        step "adding this host's extra CA certificates to the base (TLS-intercepting egress)"
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
        extra_ca=1
    fi
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    step "importing the root file system as $LOCAL_BASE"
    local ctr mnt
    ctr="$("${BUILDAH[@]}" from scratch)"
    mnt="$("${BUILDAH[@]}" mount "$ctr")"
    tar -C "$rootfs" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -cf - . | tar -C "$mnt" -xpf -
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    local config=(--env LANG=C.UTF-8 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                  --cmd python3 --label "org.opencontainers.image.base.name=debian:$SUITE (debootstrap)")
    if [ "$extra_ca" = 1 ]; then
        config+=(--env PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
    fi
    "${BUILDAH[@]}" config "${config[@]}" "$ctr"
    "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
}

SECONDS=0
if [ -z "$BASE" ]; then
    if "${BUILDAH[@]}" inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then
        step "base image $LOCAL_BASE (cached in $CACHE/storage)"
    else
        build_local_base
    fi
    BASE="$LOCAL_BASE"
fi

step "buildah bud --isolation chroot --build-arg PYTHON_IMAGE=$BASE -t $TAG"
# --format docker keeps the HEALTHCHECK (the OCI image config has no field for it).
"${BUILDAH[@]}" bud --isolation chroot --format docker --pull=false --layers=false \
    --build-arg "PYTHON_IMAGE=$BASE" -t "$TAG" -f "$REPO/Dockerfile" "$REPO"
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' | grep -F "${TAG%:*}" || true
echo "build took ${SECONDS}s"

if [ "$SMOKE" = 1 ]; then
    step "smoke test of $TAG"
    smoke_args=(--image "$TAG" --buildah "${BUILDAH[*]}" --rules "$REPO/rules/checkout.yaml")
    [ "$KEEP" = 1 ] && smoke_args+=(--keep)
    python3 "$REPO/scripts/image_smoke.py" "${smoke_args[@]}"
fi
echo "build-image: done in ${SECONDS}s: $TAG"
