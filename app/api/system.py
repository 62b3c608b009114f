"""Operational endpoints: /health, /ready, /info and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.errors import ERROR_RESPONSES, error_body
from app.api.protocol import InfoResponse, LengthControlInfo, Limits, MemberInfo
from app.service import RewardService

router = APIRouter(tags=["system"])


@router.get("/health", summary="Liveness: the process is up")
async def get_health() -> dict[str, str]:
    """200 whenever the process can answer, loaded or not."""
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: the model is loaded and warmed up",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ready", "model": "demo"}}}},
        503: ERROR_RESPONSES[503],
    },
)
async def get_ready(request: Request) -> JSONResponse:
    """200 once every member is loaded and warmed up; 503 before."""
    service: RewardService = request.app.state.service
    if not service.ready:
        message = (
            "the server is shutting down"
            if service.draining
            else f"loading failed: {service.load_error}"
            if service.load_error
            else "the model is still loading"
        )
        return JSONResponse(error_body("not_ready", message), status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "model": service.model_id})


@router.get(
    "/info", response_model=InfoResponse, summary="What is served, on which device, with which limits"
)
async def get_info(request: Request) -> InfoResponse:
    """Model, members, dtype, device, normalization, calibration, weight hashes and effective limits."""
    service: RewardService = request.app.state.service
    s = service.settings
    members = service.members
    return InfoResponse(
        model=service.model_id,
        ready=service.ready,
        num_members=len(members),
        aggregation=service.default_aggregation if service.combiner else None,
        uncertainty_coef=service.uncertainty_coef if service.combiner else None,
        members=[
            MemberInfo(
                name=m.name,
                path=str(m.model.checkpoint),
                architecture=m.model.architecture,
                engine=m.model.engine.name,
                compiled=m.model.engine.compiled,
                prefix_sharing=m.model.shares_prefixes,
                prefix_sharing_note=m.model.prefix_sharing_note,
                device=str(m.model.device),
                dtype=str(m.model.dtype).removeprefix("torch."),
                parameters=m.model.num_parameters,
                max_length=m.formatter.max_length,
                max_batch_tokens=m.batcher.max_batch_tokens,
                max_padding_ratio=m.batcher.max_padding_ratio,
                input_format=m.formatter.format_name,
                normalization=m.metadata.normalization.model_dump(),
                calibration=m.metadata.calibration.model_dump(),
                length_fit=m.metadata.length.model_dump() if m.metadata.length else None,
                weight=m.model.weight,
                weights_sha256=m.model.weights_sha256,
                provenance=m.metadata.provenance,
            )
            for m in members
        ],
        length_control=LengthControlInfo(
            penalty=s.length_penalty,
            residual=s.length_residual,
            residual_available=bool(service.combiner and service.combiner.length_fits()),
        ),
        limits=Limits(
            max_input_tokens=min((m.formatter.max_length for m in members), default=None),
            max_batch_size=s.max_batch_size,
            max_batch_tokens=min((m.batcher.max_batch_tokens for m in members), default=None),
            max_padding_ratio=min((m.batcher.max_padding_ratio for m in members), default=None),
            max_wait_ms=s.max_wait_ms,
            max_queue_items=s.max_queue_items,
            max_items_per_request=s.max_items_per_request,
            max_body_bytes=s.max_body_bytes,
            truncate=s.truncate,
        ),
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def get_metrics(request: Request) -> Response:
    """Prometheus text exposition of this app's registry."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
