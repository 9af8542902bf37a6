# syntax=docker/dockerfile:1
# acme-delegate: the HTTP service, as a non-root, read-only-friendly image.
#
#   docker build -t acme-delegate:0.1.0 .
#   docker run --rm -p 8080:8080 -v acme-delegate:/data \
#     -e ACME_DELEGATE_DO_TOKEN_FILE=/run/secrets/do-token ... acme-delegate:0.1.0
#
# The install steps are scripts/install-image, which the tests also run, so they cannot
# rot: it builds the wheel, installs it into /opt/acme-delegate and checks the result.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: builds the wheel and the virtual environment ---------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY scripts/install-image ./scripts/install-image
RUN PYTHON=python3 bash scripts/install-image /opt/acme-delegate /src \
    # The image needs no installer at run time.
    && /opt/acme-delegate/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && /opt/acme-delegate/bin/acme-delegate --version

# --- runtime: the environment, a user, nothing to build with -------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="acme-delegate" \
      org.opencontainers.image.description="Least-privilege ACME DNS-01 credentials over the DigitalOcean Domains API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 acme-delegate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin acme-delegate \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    # pip and setuptools of the base image are not needed to run the service.
    && python -m pip uninstall --yes --quiet pip setuptools wheel
COPY --from=builder /opt/acme-delegate /opt/acme-delegate
ENV PATH=/opt/acme-delegate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ACME_DELEGATE_DATABASE_URL=sqlite:////data/acme-delegate.sqlite3
WORKDIR /data
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
ENTRYPOINT ["acme-delegate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
