# llmport's container image: the gateway, its CLI and nothing else (no torch). For in-process
# HuggingFace models build with --build-arg EXTRAS=local: pip then resolves torch from PyPI,
# which on x86_64 is a CUDA build of several GB (see the `local` extra in pyproject.toml).
#
#   docker build -t llmport .
#   docker run -p 8000:8000 -e LLMPORT_MASTER_KEY=sk-... -v ./llmport.yaml:/etc/llmport/llmport.yaml llmport
#
# The official python images are built with profile-guided and link-time optimisation, which
# the benchmark found worth ~40% of a request's CPU against a plain source build (bench/README.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/llmport \
 && /opt/llmport/bin/pip install ".${EXTRAS:+[$EXTRAS]}"

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/llmport /opt/llmport
COPY deploy/docker/llmport.yaml /etc/llmport/llmport.yaml
# An unprivileged user; the data directory (SQLite database, spend journal) is its only
# writable place: mount a volume there to keep the spend log across restarts.
RUN useradd --system --uid 10001 --home-dir /var/lib/llmport --create-home llmport
USER 10001
ENV PATH=/opt/llmport/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLMPORT_CONFIG=/etc/llmport/llmport.yaml \
    LLMPORT_DATA_DIR=/var/lib/llmport
# Two malloc arenas, not eight per core: the database driver's threads each kept their own
# (bench/batch_memory.py, an 81 MB batch: peak RSS +20 MB over the run, +53 MB without;
# no throughput difference beyond the noise in bench/alternate.py, variant arenas-2).
ENV MALLOC_ARENA_MAX=2
VOLUME /var/lib/llmport
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# Uvicorn stops gracefully on SIGTERM: running streams get 30 s, the spend journal is flushed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["llmport", "serve", "--host", "0.0.0.0", "--port", "8000"]
