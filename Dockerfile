# Reward model server: one `reward-serve` process per container; scale out with replicas.
#
#   docker build -t reward-server:cpu .                                  # CPU (default)
#   docker build -t reward-server:cuda --build-arg VARIANT=cuda .        # CUDA 12.8 runtime, bf16 on GPU
#   docker build -t reward-server:my-rm --build-arg MODEL_SOURCE=baked \
#       --build-context model=./checkpoints/my-rm .                      # a checkpoint baked in
#
# The model comes from the /models volume by default (REWARD_MODEL=/models/<name>; unset: the demo,
# trained into /models/demo by compose's one-off `demo` service). Nothing is downloaded at build time
# but the pinned Python packages (deploy/requirements.lock) and torch from TORCH_INDEX_URL.

ARG VARIANT=cpu
# volume: the model comes from /models at run time; baked: from the `model` build context, into the image
ARG MODEL_SOURCE=volume

# --- the two bases: Python in a virtual environment, the user, the torch index of each variant ------
FROM python:3.11.14-slim-bookworm AS base-cpu
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS base-cuda
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12=3.12.3-* python3.12-venv=3.12.3-* \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

# --- the server, on either base ---------------------------------------------------------------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS server
ARG TORCH_VERSION=2.13.0
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    REWARD_HOST=0.0.0.0 \
    REWARD_PORT=8000 \
    REWARD_DEMO_DIR=/models/demo

WORKDIR /srv
# torch first, from its variant's index, so that the lock's `torch==` line is already satisfied
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY deploy/requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY reward_model ./reward_model
COPY app ./app
COPY training ./training
COPY bench ./bench
COPY data ./data
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && useradd --create-home --uid 10001 reward \
    && mkdir -p /models \
    && chown reward /models

USER 10001
EXPOSE 8000
VOLUME ["/models"]
# /ready, not /health: dependents and orchestrators wait for the model, and a draining server turns
# unhealthy at once. The start period covers loading a model from the volume (a 7B reward model on a
# GPU node: a few minutes); the demo is trained beforehand by a one-off step, never by this container.
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 CMD ["reward-healthcheck"]
# SIGTERM drains: readiness and new requests get 503 at once, requests in flight get
# REWARD_DRAIN_SECONDS (default 30) to finish. Give the container more: compose's stop_grace_period,
# Kubernetes' terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
# One process: one model copy per member and one batch queue per copy. Never uvicorn --workers.
ENTRYPOINT ["reward-serve"]

# --- where the model comes from: MODEL_SOURCE picks one of these two as the image -------------------
# The files come from a build context (`--build-context model=<dir>`): a build argument is a string,
# and a COPY of a path given as one would reach only inside the repository's own context.
FROM scratch AS model

FROM server AS model-baked
COPY --from=model --chown=10001 / /opt/model/
ENV REWARD_MODEL=/opt/model

FROM server AS model-volume

# hadolint ignore=DL3006
FROM model-${MODEL_SOURCE}
