# The streamrec image: every component (`streamrec serve|stream|train|...`) runs from it.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY schemas schemas
COPY core core
COPY ingest ingest
COPY models models
COPY streams streams
COPY training training
COPY serving serving
COPY streamrec streamrec
COPY infra infra
RUN pip install -c requirements.lock . && useradd --create-home streamrec
USER streamrec
ENV STREAMREC_HOME=/home/streamrec
ENTRYPOINT ["streamrec"]
CMD ["--help"]
