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

# The installed package does not carry migrations/; the queue service reads them from here.
ENV MIGRATIONS_DIR=/app/migrations \
    PYTHONUNBUFFERED=1

RUN useradd --create-home --uid 10001 app
USER app

CMD ["python", "-m", "queue_service"]
