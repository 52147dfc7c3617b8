# The streamrec image: every component (`streamrec serve|stream|train|topics|replay|...`)
# runs from it; docker-compose.yml and the ECS task definitions (terraform/) pick the
# subcommand. Two stages: wheels are built with compilers, the runtime has none.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY schemas schemas
COPY core core
COPY ingest ingest
COPY models models
COPY streams streams
COPY training training
COPY serving serving
COPY rollout rollout
COPY streamrec streamrec
# Wheels for streamrec and exactly the pinned versions of its dependencies.
RUN pip wheel --wheel-dir /wheels -c requirements.lock '.[sequential]'

FROM python:3.11.7-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# libgomp1: OpenMP runtime of LightGBM and implicit.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels 'streamrec[sequential]' && rm -rf /wheels
# Non-root; data and download cache dirs exist (and are owned) before volumes mount there.
RUN useradd --create-home --uid 10001 streamrec \
    && mkdir -p /home/streamrec/data /home/streamrec/.cache \
    && chown -R streamrec:streamrec /home/streamrec
WORKDIR /home/streamrec
COPY --chown=streamrec:streamrec infra infra
USER streamrec
ENV STREAMREC_HOME=/home/streamrec
EXPOSE 8000 6066
ENTRYPOINT ["streamrec"]
CMD ["--help"]
