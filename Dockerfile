# The segmentation image: the project installed the way the README's quick start does.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY segmentation ./segmentation
COPY flows ./flows
COPY tasks ./tasks
COPY sql ./sql
RUN python3 -m venv .venv && .venv/bin/pip install -e '.[test]'

ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
RUN useradd --create-home segmentation
USER segmentation

CMD ["sh", "-c", "segmentation db upgrade && exec segmentation serve"]
