"""The service routes (OpenAPI tag ``service``): ``/health`` (liveness, no token), ``/ready``, ``/info``."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from qa.http import models as m
from qa.http.service import GUARD, ServiceDep

router = APIRouter(tags=["service"])


@router.get("/health", response_model=m.Health)
async def health() -> dict[str, Any]:
    """Liveness: the process answers (no token needed)."""
    return {"status": "ok"}


@router.get("/ready", dependencies=GUARD, response_model=m.Ready, responses={401: {"model": m.Error}, 503: {"model": m.Ready}})
async def ready(service: ServiceDep) -> Any:
    """Readiness: the index is open and the model loaded (503 until then)."""
    if service.ready:
        return {"ready": True, "detail": ""}
    return JSONResponse({"ready": False, "detail": service.problem}, status_code=503)


@router.get("/info", dependencies=GUARD, response_model=m.Info, responses={401: {"model": m.Error}, 503: {"model": m.Error}})
async def info(service: ServiceDep) -> dict[str, Any]:
    """The model, the counts, the version."""
    from qa import __version__

    base = service.get_kb()
    stats = await service.read(base.stats)
    return {
        "version": __version__,
        "model": stats["model"],
        "articles": stats["articles"],
        "chunks": stats["chunks"],
        "dimension": stats.get("dimension"),
        "retrieval": base.settings.retrieval,
        "answerer": base.settings.answerer,
        "store": base.settings.chroma_url or "embedded",
        "ready": service.ready,
    }
