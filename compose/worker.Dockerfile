# The example Python worker (sdk/python/examples/word_count.py), built from the repository root.
FROM python:3.11-slim
WORKDIR /app
COPY sdk/python /app
RUN pip install --no-cache-dir /app \
    && useradd --system --uid 10002 worker
USER worker
CMD ["python", "examples/word_count.py"]
