# syntax=docker/dockerfile:1
# projectgen operator image.
#   docker build -t projectgen:0.1.0 --build-arg VERSION=0.1.0 .
#   make image                    (podman or buildah; BASE=local: a Debian base made here, see below)
# (VERSION labels the image; the package's own version comes from pyproject.toml.)
# The builder makes wheels (projectgen's and every dependency's); the final image installs them
# from that directory only: no compiler, no build tools, no pip cache in the final image.
# It runs as uid 10001 with a read-only root file system: it writes only to $HOME=/tmp (an emptyDir
# in manifests/operator/deployment.yaml) and to the data volume /var/lib/projectgen (the PVC).
# BASE: any Debian-based image with python3 (3.11+) and `python3 -m pip`. The default is the public
# one; hack/build-base.sh makes an equivalent from Debian's packages where no registry is reachable
# (Debian's pip refuses to install into the system Python unless PIP_BREAK_SYSTEM_PACKAGES is set,
# which python:3.11-slim's pip ignores).
# The build secret `build_ca` (optional): a CA bundle for pip in the builder, for networks with an
# intercepting proxy (`--secret id=build_ca,src=/etc/ssl/certs/ca-certificates.crt`). A secret is
# mounted for that one RUN only: it is in no layer, and the final image never sees it.
ARG BASE=python:3.11-slim

FROM ${BASE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# projectgen's wheel, then wheels of its dependencies (downloaded from PyPI, built when only an
# sdist exists) into /wheels; pip in the final stage installs from there without the network.
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi \
    && python3 -m pip wheel --no-deps -w /dist . \
    && python3 -m pip wheel -w /wheels /dist/projectgen-*.whl

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="projectgen" \
      org.opencontainers.image.description="Kubernetes operator that generates software projects and ships them as archives or new GitHub/GitLab repositories" \
      org.opencontainers.image.source="https://github.com/projectgen/projectgen" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    HOME=/tmp \
    PROJECTGEN_DATA_DIR=/var/lib/projectgen
# git: templates are cloned, and exports pushed, with the git CLI. libseccomp2: the render
# sandbox's seccomp filter (pyseccomp loads it). Debian's versions are whatever the base image's
# release ships (security updates come with rebuilds), so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates libseccomp2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 projectgen \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin projectgen \
    && mkdir -p /var/lib/projectgen \
    && chown 10001:10001 /var/lib/projectgen
# --compile: the bytecode is written now; at run time the root file system is read-only.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m pip install --compile --no-index --find-links=/wheels /wheels/projectgen-*.whl \
    && projectgen --version
WORKDIR /var/lib/projectgen
VOLUME /var/lib/projectgen
EXPOSE 8080 9090 8443
USER 10001:10001
ENTRYPOINT ["projectgen"]
CMD ["run"]
