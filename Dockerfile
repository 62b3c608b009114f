# Reward model server. CPU by default; for CUDA build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    REWARD_HOST=0.0.0.0 \
    REWARD_PORT=8000 \
    REWARD_DEMO_DIR=/models/demo

WORKDIR /srv
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY pyproject.toml README.md ./
COPY reward_model ./reward_model
COPY app ./app
COPY training ./training
COPY bench ./bench
COPY data ./data
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 reward \
    && mkdir -p /models \
    && chown reward /models

USER 10001
EXPOSE 8000
VOLUME ["/models"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
# One process, one model copy per member, one batch queue per copy: scale out with replicas,
# never with uvicorn --workers (that would mean N model copies and N queues per container).
ENTRYPOINT ["reward-serve"]
