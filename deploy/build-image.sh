#!/usr/bin/env bash
# Build the Lantern CUDA server image from deploy/Dockerfile (repository root as context):
#
#   deploy/build-image.sh                                  # lantern:<version>-cu12.8.1-sm90
#   IMAGE=registry.example.com/lantern:0.1.0 deploy/build-image.sh
#   CUDA_COMPUTE_CAP=80 deploy/build-image.sh              # A100 (sm_80)
#   CUDA_VERSION=13.0.1 deploy/build-image.sh              # CUDA 13.0 (driver >= 580)
#   PUSH=1 IMAGE=... deploy/build-image.sh                 # docker push afterwards
#
# For CI or a developer machine that has docker with BuildKit (Docker >= 23, or
# DOCKER_BUILDKIT=1): the Dockerfile uses cache mounts and deploy/Dockerfile.dockerignore.
# It is NOT run by this repository's tests: the build and CI machines here have no
# container runtime. scripts/check-deploy.sh only checks the Dockerfile's structure.
#
# Variables (all optional):
#   CUDA_VERSION      default 12.8.1 (nvidia/cuda:<v>-devel/-runtime-ubuntu<UBUNTU_VERSION>)
#   UBUNTU_VERSION    default 24.04
#   CUDA_COMPUTE_CAP  default 90 (H100/H200, sm_90a); same meaning as in scripts/gpu/build.sh
#   RUST_TOOLCHAIN    default stable
#   CARGO_BUILD_JOBS  default: all cores of the builder
#   IMAGE             default lantern:<crate version>-cu<CUDA_VERSION>-sm<CUDA_COMPUTE_CAP>
#   PLATFORM          default linux/amd64
#   PUSH              1 to push IMAGE after building
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_VERSION=${CUDA_VERSION:-12.8.1}
UBUNTU_VERSION=${UBUNTU_VERSION:-24.04}
CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
RUST_TOOLCHAIN=${RUST_TOOLCHAIN:-stable}
PLATFORM=${PLATFORM:-linux/amd64}
version=$(sed -n '/^\[workspace.package\]/,/^\[/{s/^version *= *"\(.*\)"/\1/p}' Cargo.toml | head -1)
IMAGE=${IMAGE:-lantern:${version:-dev}-cu${CUDA_VERSION}-sm${CUDA_COMPUTE_CAP//,/-}}

if ! command -v docker > /dev/null; then
    echo "build-image.sh: docker not found (this script needs a container runtime)" >&2
    exit 1
fi

args=(
    --file deploy/Dockerfile
    --platform "$PLATFORM"
    --build-arg "CUDA_VERSION=$CUDA_VERSION"
    --build-arg "UBUNTU_VERSION=$UBUNTU_VERSION"
    --build-arg "CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
    --build-arg "RUST_TOOLCHAIN=$RUST_TOOLCHAIN"
    --label "org.opencontainers.image.version=${version:-dev}"
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2> /dev/null || echo unknown)"
    --tag "$IMAGE"
)
if [ -n "${CARGO_BUILD_JOBS:-}" ]; then
    args+=(--build-arg "CARGO_BUILD_JOBS=$CARGO_BUILD_JOBS")
fi

echo "building $IMAGE (CUDA $CUDA_VERSION, ubuntu $UBUNTU_VERSION, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
DOCKER_BUILDKIT=1 docker build "${args[@]}" .
if [ "${PUSH:-0}" = 1 ]; then
    docker push "$IMAGE"
fi
echo "built $IMAGE"
echo "run:   docker run --gpus all -p 8000:8000 -v hf-cache:/models -e HF_TOKEN $IMAGE --model Qwen/Qwen2.5-7B-Instruct"
