# The segmentation image: the project's wheel, built from the repository and installed (not
# editable, without the test extras) into a virtual environment, as a team installs it into
# its own Prefect worker image. tests/test_wheel.py builds and installs the same wheel.
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY segmentation ./segmentation
COPY flows ./flows
COPY tasks ./tasks
COPY sql ./sql
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=wheel /wheels /wheels
# The versions CI tests (constraints.txt, the lock), not the newest of the day of the build.
COPY constraints.txt /wheels/constraints.txt
# With the dask extra: the same image runs the flow, the Dask scheduler and the Dask workers.
RUN python3 -m venv /app/.venv \
    && /app/.venv/bin/pip install --no-cache-dir -c /wheels/constraints.txt "$(ls /wheels/*.whl)[dask]" \
    && rm -rf /wheels

ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
RUN useradd --create-home segmentation
USER segmentation
WORKDIR /home/segmentation

CMD ["sh", "-c", "segmentation db upgrade && exec segmentation serve"]
