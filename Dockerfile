# One image for the operator and the sidecar (and `leadership status`):
#   docker build -t leadership:0.1.0 .          (make image)
#   leadership operator ... | leadership sidecar --election NAME | leadership status
# The build stage installs the package with its operator extra into a virtualenv, every
# dependency pinned by hash; the final stage copies only that virtualenv onto the same slim
# base, without pip or any build tool, and runs as an unprivileged user (the manifests also
# set a read-only root filesystem).
# The current patch release of Python 3.11 on Debian bookworm, pinned by the digest of its
# multi-platform index: a build resolves exactly this image or fails. (No registry is
# reachable where this project is tested; the digest is the one published for this tag, and
# `make image` builds against a local stand-in for this exact reference, see docs/operator.md.)
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm@sha256:2333bd330d12de02514770b3585cad313644316047cdee24a7acfdece6de6efb

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/leadership
# Dependencies first, each checked against its hash in image-lock.txt (`make lock`), the build
# backend included; then the project itself, built with exactly those, offline.
COPY image-lock.txt ./
RUN /opt/leadership/bin/pip install --no-compile --require-hashes -r image-lock.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/leadership/bin/pip install --no-compile --no-deps --no-build-isolation --no-index . \
 && /opt/leadership/bin/pip uninstall -y pip setuptools wheel \
 && /opt/leadership/bin/python -m compileall -q /opt/leadership/lib

FROM ${PYTHON_IMAGE}
# No pip, setuptools or wheel in the image that runs: nothing to install anything with.
RUN python -m pip uninstall -y pip setuptools wheel \
 && useradd --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin leadership
COPY --from=build /opt/leadership /opt/leadership
ENV PATH=/opt/leadership/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 8080: the operator's /healthz and /metrics; 4040: the sidecar's /leader, /healthz, /metrics.
EXPOSE 8080 4040
ENTRYPOINT ["leadership"]
CMD ["--help"]
