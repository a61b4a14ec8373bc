"""The explorer's web app: a FastAPI JSON API over :class:`~sparsecbm.serve.explorer.Explorer` and the static
page in ``sparsecbm/serve/static`` (plain HTML/CSS/JS, nothing loaded from the network).

The split's views (``/api/dataset``, ``/api/curves``, the prediction filters of ``/api/examples``) answer at
once: 202 with ``{"status": "running", "done": n, "total": N}`` while the background pass runs (the page polls),
then the results (see :mod:`sparsecbm.serve.split_pass`). ``/api/counterfactuals`` lists the split's examples
with human counterfactuals, ``/api/counterfactuals/{index}`` compares the intervention with them
(:mod:`sparsecbm.serve.counterfactuals`).

The client never names a file: the checkpoint(s) and the data are fixed when the server starts, and a
request names a text or an example index. Request bodies over ``limits.max_body_bytes`` get 413.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict

from sparsecbm.serve.explorer import Explorer, ExplorerError

STATIC = Path(__file__).parent / "static"
#: Nothing from elsewhere: scripts, styles, images, fetches only from this server.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    example: int | None = None


class PredictRequest(_Request):
    pass


class InterveneRequest(_Request):
    set: dict[str, Any] | str | None = None


class MaskRequest(_Request):
    concept: str
    value: str
    portion: float | None = None


class ExplainRequest(_Request):
    method: str = "ours"


class ExportRequest(ExplainRequest):
    format: str = "json"


class BodyLimit:
    """ASGI middleware: reads a request body up to ``limit`` bytes and answers 413 beyond it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_big = JSONResponse({"detail": f"request body larger than {self.limit} bytes (limits.max_body_bytes)"},
                               status_code=413)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await too_big(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await too_big(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg')}")
    return "; ".join(parts)


def _pending(body: dict[str, Any]):
    """``body`` as is once the split's pass is done; its progress with 202 Accepted while it runs (or 500
    after it failed, with the reason in ``detail``)."""
    status = body.get("status", "done")
    if status == "done":
        return body
    return JSONResponse(body, status_code=500 if status == "error" else 202)


def create_app(explorer: Explorer, compare: Explorer | None = None) -> FastAPI:
    """The app for one checkpoint (and optionally a second one to compare with)."""
    app = FastAPI(title="sparsecbm explorer", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.explorer, app.state.compare = explorer, compare

    @app.exception_handler(ExplorerError)
    async def explorer_error(_request: Request, exc: ExplorerError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {**explorer.info(), "compare": None if compare is None else compare.info()}

    @app.post("/api/predict")
    def predict(req: PredictRequest) -> dict[str, Any]:
        return explorer.predict(req.text, req.example)

    @app.post("/api/intervene")
    def intervene(req: InterveneRequest) -> dict[str, Any]:
        return explorer.intervene(req.set, req.text, req.example)

    @app.post("/api/intervene/mask")
    def intervene_mask(req: MaskRequest) -> dict[str, Any]:
        return explorer.mask_intervene(req.concept, req.value, req.text, req.example, req.portion)

    @app.post("/api/explain")
    def explain(req: ExplainRequest) -> dict[str, Any]:
        return explorer.explain(req.method, req.text, req.example)

    @app.post("/api/export")
    def export(req: ExportRequest) -> Response:
        content = explorer.export(req.format, req.method, req.text, req.example)
        name, media = ("explanations.json", "application/json") if req.format == "json" else ("report.html", "text/html")
        return Response(content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.post("/api/compare")
    def compare_text(req: PredictRequest) -> dict[str, Any]:
        if compare is None:
            raise ExplorerError("no second model: start the server with compare_ckpt_path=... to compare", status=404)
        return {"main": explorer.predict(req.text, req.example),
                "compare": compare.predict(explorer.resolve(req.text, req.example)[0])}

    @app.get("/api/examples")
    def examples(wrong_label: bool | None = None, wrong_concept: str | None = None, label: str | None = None,
                 concept: str | None = None, value: str | None = None, q: str | None = Query(None, max_length=200),
                 offset: int = 0, limit: int = 50, counterfactual: bool | None = None) -> dict[str, Any]:
        return _pending(explorer.examples(wrong_label, wrong_concept, label, concept, value, q, offset, limit,
                                          counterfactual))

    @app.get("/api/examples/{index}")
    def example(index: int) -> dict[str, Any]:
        return explorer.example(index)

    @app.get("/api/counterfactuals")
    def counterfactual_examples() -> dict[str, Any]:
        return explorer.counterfactual_examples()

    @app.get("/api/counterfactuals/{index}")
    def counterfactuals(index: int) -> dict[str, Any]:
        return explorer.counterfactuals(index)

    @app.get("/api/dataset")
    def dataset() -> dict[str, Any]:
        return _pending(explorer.dataset())

    @app.get("/api/curves")
    def curves() -> dict[str, Any]:
        return _pending(explorer.curves())

    @app.get("/api/subnetworks")
    def subnetworks() -> dict[str, Any]:
        return explorer.subnetworks()

    app.add_middleware(BodyLimit, limit=explorer.limits.max_body_bytes)
    return app
