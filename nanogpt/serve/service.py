"""The classifier as an HTTP service: `python -m nanogpt serve --checkpoint PATH [...]` (FastAPI + uvicorn).

  POST /v1/classify   {"texts": [...], "model": optional name} -> label, P(positive) and the model, per text
  GET  /v1/models     each loaded model's metadata; the default is marked
  GET  /healthz       alive
  GET  /readyz        every model loaded and warmed up by one prediction
  GET  /metrics       Prometheus text format (requests, errors, latency, batch sizes)
  GET  /docs          the OpenAPI page FastAPI generates

Requests to one model are micro-batched (`nanogpt.serve.batcher`). Bad input is a 4xx whose JSON names the field
and the limit; a body over the size cap is refused before it is parsed; an optional API key guards /v1/* and
/metrics. A prediction that raises answers its request with a 500 and an error id that the log repeats; the
service keeps serving. Models are loaded at start from the command line only: no request names a file.
"""
from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanogpt.core.losses import LABEL_NAMES
from nanogpt.serve.batcher import MicroBatcher
from nanogpt.serve.contract import is_blank, openapi_contract

log = logging.getLogger("nanogpt.serve.service")
WARMUP_TEXT = "A warm-up review: the service is getting ready."


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # texts per request
    max_chars: int = 20_000  # characters per text (IMDB's longest review has 13,704)
    max_body_bytes: int = 2_000_000  # request body, refused before parsing
    max_batch: int = 32  # texts per merged forward pass; 1 = one forward per request
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for others

    def __post_init__(self):
        for name in ("max_texts", "max_chars", "max_body_bytes", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}.")
        if self.max_body_bytes < self.max_texts * (self.max_chars + 4) + 64:  # the schema's largest ASCII request
            raise ValueError(f"max_body_bytes {self.max_body_bytes} cannot hold {self.max_texts} texts of "
                             f"{self.max_chars} characters, which the published schema allows: raise it to at least "
                             f"{self.max_texts * (self.max_chars + 4) + 64} or lower max_texts / max_chars.")


@dataclass
class ServedModel:
    name: str
    classifier: object  # nanogpt.serve.predict.Classifier
    meta: dict = field(default_factory=dict)
    batcher: MicroBatcher | None = None
    ready: bool = False


def describe_checkpoint(path: Path, classifier) -> dict:
    """What /v1/models says about a model: from the checkpoint and, when beside it, the run's meta.json (read
    as JSON; nothing is executed)."""
    ckpt = classifier.checkpoint
    train_config = ckpt.get("train_config") or {}
    meta = {"loss": classifier.loss, "profile": train_config.get("profile"), "seed": train_config.get("seed"),
            "val_accuracy": ckpt.get("val_accuracy"), "data_source": ckpt.get("data_source"),
            "block_size": classifier.model.config.block_size, "reading": classifier.reading,
            "window_stride": classifier.window_stride, "checkpoint": path.name}
    try:
        row = json.loads((path.parent / "meta.json").read_text()).get("row", {})
    except (OSError, ValueError, AttributeError):
        row = {}
    meta.update(run_id=row.get("run_id"), ece=row.get("ece"), roc_auc=row.get("roc_auc"),
                torch_version=row.get("torch_version"), precision=row.get("precision"))
    return meta


def load_models(specs: list[str], device: str = "cpu", precision: str = "fp32",
                reading: str | None = None) -> dict[str, ServedModel]:
    """`PATH` or `NAME=PATH` per checkpoint; unnamed models are named by their loss (then loss-2, ...). `reading`
    None: each model reads long reviews as its checkpoint records."""
    from nanogpt.serve.predict import Classifier

    models: dict[str, ServedModel] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        name, path = (name, Path(rest)) if sep and "/" not in name and name else ("", Path(spec))
        classifier = Classifier.load(path, device=device, precision=precision, reading=reading)
        if not name:
            name, n = classifier.loss, 2
            while name in models:
                name, n = f"{classifier.loss}-{n}", n + 1
        if name in models:
            raise ValueError(f"two checkpoints are named {name!r}; give each its own NAME=PATH.")
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"model name {name!r}: use letters, digits, '-', '_' or '.'.")
        models[name] = ServedModel(name, classifier, describe_checkpoint(path, classifier))
    if not models:
        raise ValueError("give at least one --checkpoint.")
    return models


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    texts: list[str] = Field(description="reviews to classify, one string each")
    model: str | None = Field(default=None, description="a name from GET /v1/models; the default when absent")


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("nanogpt_requests", "HTTP requests answered", ["path", "status"],
                                registry=self.registry)
        self.errors = Counter("nanogpt_prediction_errors", "predictions that raised", ["model"],
                              registry=self.registry)
        self.latency = Histogram("nanogpt_request_seconds", "request latency", ["path"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch_texts = Histogram("nanogpt_batch_texts", "texts per forward pass", ["model"],
                                     registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_requests = Histogram("nanogpt_batch_requests", "requests merged into one forward pass",
                                        ["model"], registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64))
        self.in_flight = Gauge("nanogpt_classify_in_flight", "classify requests waiting for their prediction",
                               ["model"], registry=self.registry)


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


class Guard:
    """ASGI middleware in front of every route: the API key (on /v1/* and /metrics), the body size cap (by the
    declared Content-Length, or while the body streams in, before any of it is parsed), and the request
    metrics. Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs more per request."""

    def __init__(self, app, limit: int, api_key: str | None, metrics: "Metrics", known_paths: set[str]):
        self.app, self.limit, self.api_key, self.metrics, self.known = app, limit, api_key, metrics, known_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"] if scope["path"] in self.known else "other"
        status = {"code": 500}

        async def send_observed(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None:
                receive, refusal = await self._bounded(receive)
            if refusal is not None:
                return await refusal(scope, receive, send_observed)
            return await self.app(scope, receive, send_observed)
        finally:
            self.metrics.requests.labels(path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - t0)

    def _refusal(self, scope) -> JSONResponse | None:
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and (scope["path"].startswith("/v1/") or scope["path"] == "/metrics"):
            given = headers.get(b"x-api-key") or headers.get(b"authorization", b"").removeprefix(b"Bearer ")
            if not hmac.compare_digest(given, self.api_key.encode()):
                return _error(401, "missing or wrong API key: send it in the X-API-Key header")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return self._too_big()
        return None

    def _too_big(self) -> JSONResponse:
        return _error(413, f"request body over the limit of {self.limit} bytes", field="body", limit=self.limit)

    async def _bounded(self, receive):
        """Read the whole body (at most `limit` bytes) and hand it on in one message."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive, None  # the app sees the disconnect itself
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return receive, self._too_big()
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None


def serve(models: dict[str, ServedModel], host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
          api_key: str | None = None, default: str | None = None, log_level: str = "info") -> None:
    """Run the service until SIGTERM or Ctrl-C; in-flight requests are answered before it exits."""
    import uvicorn

    app = create_app(models, limits, api_key, default)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30, access_log=True)


def create_app(models: dict[str, ServedModel], limits: Limits = Limits(), api_key: str | None = None,
               default: str | None = None) -> FastAPI:
    default = default or next(iter(models))
    if default not in models:
        raise ValueError(f"default model {default!r} is not loaded; loaded: {sorted(models)}.")
    metrics = Metrics()
    forward_batch = max(limits.max_batch, limits.max_texts)  # a request, or a merged batch, is one forward pass
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")  # one forward pass at a time

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for served in models.values():
            clf = served.classifier
            served.batcher = MicroBatcher(lambda texts, clf=clf: clf.predict(texts, batch_size=forward_batch)
                                          .probabilities, executor, limits.max_batch, limits.max_wait_ms / 1000,
                                          on_batch=lambda n, r, name=served.name: (
                                              metrics.batch_texts.labels(name).observe(n),
                                              metrics.batch_requests.labels(name).observe(r)))
            served.batcher.start()
            await served.batcher.submit([WARMUP_TEXT])  # first forward pass: allocations, kernels
            served.ready = True
            log.info("model %s ready (%s)", served.name, served.meta.get("run_id") or served.meta["checkpoint"])
        yield
        for served in models.values():
            served.ready = False
            await served.batcher.stop()
        executor.shutdown(wait=True)

    app = FastAPI(title="nanogpt-imdb sentiment classifier", version="1", lifespan=lifespan,
                  description="A small GPT trained on IMDB reviews: positive or negative, with P(positive).")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = [{"field": "body" if e.get("type") == "json_invalid" else
                     ".".join(str(p) for p in e.get("loc", ())[1:]) or "body",
                     "message": f"invalid JSON ({e.get('ctx', {}).get('error', 'cannot be parsed')})"
                     if e.get("type") == "json_invalid" else e.get("msg")} for e in exc.errors()]
        for problem, e in zip(problems, exc.errors()):
            if problem["field"] == "body" and e.get("type") in ("model_attributes_type", "dict_type", "missing"):
                problem["message"] = ('send a JSON object such as {"texts": ["a review"]} with Content-Type: '
                                      "application/json")
        first = problems[0] if problems else {"field": "body", "message": "invalid request"}
        return _error(422, f"{first['field']}: {first['message']}", field=first["field"], problems=problems[:20])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's answer to a body that is not UTF-8 JSON: the contract's 422
            return _error(422, "body: invalid JSON (not UTF-8 text)", field="body",
                          problems=[{"field": "body", "message": "invalid JSON (not UTF-8 text)"}])
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # the last resort: never a dropped connection
        error_id = uuid.uuid4().hex[:12]
        log.error("unhandled error %s on %s", error_id, request.url.path, exc_info=exc)
        return _error(500, "internal error", error_id=error_id)

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest):
        name = body.model or default
        if name not in models:
            return _error(404, f"unknown model {name!r}; loaded: {sorted(models)}", field="model")
        if not body.texts:
            return _error(422, "texts: give at least one text", field="texts")
        # limits the schema states (maxItems, maxLength) are schema violations: 422; 413 is the body-size cap's
        if len(body.texts) > limits.max_texts:
            return _error(422, f"texts: {len(body.texts)} texts, over the limit of {limits.max_texts} per request",
                          field="texts", limit=limits.max_texts)
        for i, text in enumerate(body.texts):
            if len(text) > limits.max_chars:
                return _error(422, f"texts.{i}: {len(text)} characters, over the limit of {limits.max_chars}",
                              field=f"texts.{i}", limit=limits.max_chars)
            if is_blank(text):
                return _error(422, f"texts.{i}: the text is empty", field=f"texts.{i}")
        served = models[name]
        if not served.ready:
            return _error(503, f"model {name!r} is not ready yet")
        try:
            with metrics.in_flight.labels(name).track_inprogress():
                probs = await served.batcher.submit(body.texts)
        except Exception as exc:  # noqa: BLE001 - this request fails; the service goes on
            error_id = uuid.uuid4().hex[:12]
            metrics.errors.labels(name).inc()
            log.error("prediction failed, error id %s (model %s, %d texts)", error_id, name, len(body.texts),
                      exc_info=exc)
            return _error(500, "prediction failed", error_id=error_id)
        return {"model": name, "results": [
            {"label": int(p > 0.5), "sentiment": LABEL_NAMES[int(p > 0.5)], "positive_probability": float(p)}
            for p in probs]}

    @app.get("/v1/models")
    async def list_models():
        return {"default": default, "models": [{"name": m.name, "ready": m.ready, **m.meta} for m in models.values()]}

    @app.get("/healthz")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        waiting = [m.name for m in models.values() if not m.ready]
        if waiting:
            return _error(503, "not ready", waiting_for=waiting)
        return {"status": "ready", "models": list(models)}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def contract():
        if app.openapi_schema is None:
            app.openapi_schema = openapi_contract(app, limits, list(models), api_key is not None, CONTENT_TYPE_LATEST)
        return app.openapi_schema

    app.openapi = contract
    known = {"/v1/classify", "/v1/models", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}
    app.add_middleware(Guard, limit=limits.max_body_bytes, api_key=api_key, metrics=metrics, known_paths=known)
    return app
