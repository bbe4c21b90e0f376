# One image for the three Python services; docker-compose.yml picks the command.
FROM python:3.11-slim

# ffmpeg (with ffprobe) is what the pipeline's media stages run.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobqueue ./jobqueue
COPY queue_service ./queue_service
COPY worker_service ./worker_service
COPY gateway ./gateway
COPY migrations ./migrations
RUN pip install --no-cache-dir .

# Optional: the local embedding model, so that embeddings are made without OpenAI. torch must
# come from PyTorch's CPU-only wheel index (from PyPI it is a CUDA build of several GB):
#   docker compose build --build-arg LOCAL_EMBEDDINGS=1 --build-arg TORCH_INDEX_URL=<that index>
ARG LOCAL_EMBEDDINGS=0
ARG TORCH_INDEX_URL=""
RUN if [ "$LOCAL_EMBEDDINGS" = "1" ]; then \
        test -n "$TORCH_INDEX_URL" || { echo "set TORCH_INDEX_URL (PyTorch's CPU wheel index)"; exit 1; }; \
        pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch==2.13.0 \
        && pip install --no-cache-dir ".[local-embeddings]"; \
    fi

# The installed package does not carry migrations/; the queue service reads them from here.
ENV MIGRATIONS_DIR=/app/migrations \
    PYTHONUNBUFFERED=1

RUN useradd --create-home --uid 10001 app
USER app

CMD ["python", "-m", "queue_service"]
