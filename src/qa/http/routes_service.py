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
    """Readiness: the index is open, the model loaded, and the backends (the database, Chroma) answer (503 else)."""
    if not service.ready or service.kb is None:
        return JSONResponse({"ready": False, "detail": service.problem, "backends": {}}, status_code=503)
    backends = await service.read(service.kb.probe)
    away = {name: answer for name, answer in backends.items() if answer != "ok"}
    if away:
        detail = "; ".join(f"{name}: {answer}" for name, answer in away.items())
        return JSONResponse({"ready": False, "detail": detail, "backends": backends}, status_code=503)
    return {"ready": True, "detail": "", "backends": backends}


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
        "database": stats.get("database_url", "sqlite"),
        "queue": stats.get("queue"),
        "ready": service.ready,
    }
