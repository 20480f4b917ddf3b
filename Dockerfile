# cac-mhub: chest CT (DICOM) in /app/data/input_data -> coronary artery calcium scores, DICOM SEG/SR
# and reports in /app/data/output_data. See docs/container.md.
#
#   docker build -t cac-mhub .
#   docker run --rm --gpus all -v /path/to/dicom:/app/data/input_data:ro \
#       -v /path/to/out:/app/data/output_data cac-mhub
#
# BASE_IMAGE: a pinned CUDA base. torch 2.14.1's wheels bring their own CUDA 13 user-space
# libraries (cuBLAS, cuDNN, ... as nvidia-* wheels), so the slim "base" flavour (CUDA runtime
# only) is enough and the "runtime" flavour would ship those libraries twice. The GPU needs an
# NVIDIA driver >= 580 on the host and the NVIDIA container toolkit; without a GPU the same image
# runs on CPU. Any Debian/Ubuntu base that has python3.11 works (scripts/docker_smoke.sh builds on
# a locally made Debian bookworm base, because no registry can be reached there).
ARG BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu22.04
FROM ${BASE_IMAGE}

ARG PYTHON=python3.11
ARG DEBIAN_FRONTEND=noninteractive

# Distribution packages are not version-pinned: their versions differ per base image, and the
# base image itself is pinned. Python 3.11 matches the cp311 wheels of requirements.lock.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "${PYTHON}" "${PYTHON}-venv" ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN "${PYTHON}" -m venv "${VIRTUAL_ENV}"

# Pinned dependencies first (the big, rarely changing layer). WHEELHOUSE_URL, when set, makes the
# build use only that wheel folder (an offline build; see scripts/docker_smoke.sh), else PyPI.
# docker/requirements-tooling.txt pins what `pip freeze` leaves out of the lock; `pip check`
# fails the build on any requirement the two files leave unmet.
ARG WHEELHOUSE_URL=
COPY docker/requirements-tooling.txt requirements.lock /tmp/cac-mhub/
RUN if [ -n "${WHEELHOUSE_URL}" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS="${WHEELHOUSE_URL}"; fi \
    && pip install --no-cache-dir --no-deps -r /tmp/cac-mhub/requirements-tooling.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/cac-mhub/requirements.lock \
    && pip check

# The package itself (its dependencies are all in the lock above).
COPY pyproject.toml README.m[d] /tmp/cac-mhub/package/
COPY src /tmp/cac-mhub/package/src
RUN if [ -n "${WHEELHOUSE_URL}" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS="${WHEELHOUSE_URL}"; fi \
    && pip install --no-cache-dir --no-deps /tmp/cac-mhub/package/ \
    && rm -rf /tmp/cac-mhub

# Non-root user; the data folders are where MHub mounts them.
RUN useradd --create-home --uid 1000 --user-group mhub \
    && mkdir -p /app/data/input_data /app/data/output_data \
    && chown mhub:mhub /app/data/output_data

# Workflows, shipped model(s) and the model card; CAC_MHUB_HOME tells the CLI where they are.
COPY config /app/config
COPY models /app/models
COPY meta.json /app/meta.json
COPY docker/entrypoint.sh /app/entrypoint.sh

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cac-mhub" \
      org.opencontainers.image.description="Coronary artery calcium scoring from chest CT, MHub-style (research use only)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"

ENV CAC_MHUB_HOME=/app \
    CAC_MHUB_INPUT_DIR=/app/data/input_data \
    CAC_MHUB_OUTPUT_DIR=/app/data/output_data \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 1000:1000
WORKDIR /app
ENTRYPOINT ["/usr/bin/tini", "--", "/app/entrypoint.sh"]
CMD ["--workflow", "default"]
