# One image for the orchestrator and the three reference agents (compose picks the command).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p orchestrator agents circuit state \
    && touch orchestrator/__init__.py agents/__init__.py circuit/__init__.py state/__init__.py \
    && pip install . \
    && pip uninstall -y agent-orchestrator

COPY orchestrator ./orchestrator
COPY agents ./agents
COPY circuit ./circuit
COPY state ./state
RUN pip install --no-deps . && rm -rf build

RUN useradd --system --uid 10001 app
USER app

EXPOSE 8000
ENV ORCH_HOST=0.0.0.0 ORCH_PORT=8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["orchestrator", "serve"]
