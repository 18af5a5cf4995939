# One image for the orchestrator and the three reference agents (compose picks the command).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them: exactly the locked set
# (every package pinned with its hashes; scripts/lock.sh refreshes it), pip and the build
# backend included, so the project below is built from locked tools only.
# LOCK=fast (docker build --build-arg LOCK=fast) adds uvloop from requirements/fast.txt.
ARG LOCK=runtime
COPY requirements/tools.txt requirements/runtime.txt requirements/fast.txt ./requirements/
RUN pip install --require-hashes -r requirements/tools.txt \
    && pip install --require-hashes -r "requirements/${LOCK}.txt"

COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY agents ./agents
COPY circuit ./circuit
COPY state ./state
RUN pip install --no-deps --no-build-isolation . && pip check && rm -rf build

RUN useradd --system --uid 10001 app
USER app

EXPOSE 8000
ENV ORCH_HOST=0.0.0.0 ORCH_PORT=8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["orchestrator", "serve"]
