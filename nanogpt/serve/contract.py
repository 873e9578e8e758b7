"""The service's published contract: the OpenAPI document says what the service enforces, so a client generated
from it, or a fuzzer driven by it, never sends a request the schema calls valid and the service refuses.

FastAPI's generated document knows the request's types only. This adds the limits the handler applies (at least
one text, at most `max_texts`, each at most `max_chars` characters and not blank, the model one of those
loaded), every error response with its JSON body, the body size cap, the API key where one is required, and
`/metrics`' content type. "Blank" is defined once, here, by an explicit character class that means the same in
Python's `re` and in the ECMA-262 regexes JSON Schema uses, and the service refuses exactly what it matches.
"""
from __future__ import annotations

import re

from fastapi.openapi.utils import get_openapi

# Every character Python's str.isspace() calls whitespace (what `text.strip()` removes), listed explicitly:
# `\s` differs between Python and ECMA-262 (\x1c-\x1f, \x85, \ufeff), so neither is used. All of them lie in the
# Basic Multilingual Plane (tests/test_serve.py checks the planes above).
_SPACES = [c for c in range(0x10000) if chr(c).isspace()]


def _char_class(codes: list[int]) -> str:
    ranges, start = [], codes[0]
    for prev, cur in zip(codes, codes[1:] + [None]):
        if cur != prev + 1:
            ranges.append((start, prev))
            start = cur
    esc = lambda c: f"\\u{c:04x}"  # noqa: E731 - the same escape in both regex dialects (all are in the BMP)
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


NOT_BLANK = f"[^{_char_class(_SPACES)}]"  # a text must contain one character outside this class
_not_blank = re.compile(NOT_BLANK)


def is_blank(text: str) -> bool:
    """True for a text the contract refuses as empty: nothing in it but whitespace (str.isspace)."""
    return _not_blank.search(text) is None


ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what was wrong, naming the field and the limit"},
        "field": {"type": "string", "description": "the field at fault, e.g. texts.3 or body"},
        "limit": {"type": "integer", "description": "the limit that was exceeded"},
        "problems": {"type": "array", "items": {"type": "object"}, "description": "every validation problem"},
        "error_id": {"type": "string", "description": "500 only: the id the service log repeats"},
        "waiting_for": {"type": "array", "items": {"type": "string"}, "description": "503 only: models warming up"},
    },
}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_contract(app, limits, model_names: list[str], api_key: bool, metrics_type: str) -> dict:
    """The OpenAPI document of `app` with the enforced limits and error responses (see the module docstring)."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shape: ours is Error
        schemas.pop(name, None)
    request = schemas["ClassifyRequest"]
    texts = request["properties"]["texts"]
    texts.update(minItems=1, maxItems=limits.max_texts)
    texts["items"].update(minLength=1, maxLength=limits.max_chars, pattern=NOT_BLANK,
                          description="a review: at least one character that is not whitespace")
    request["properties"]["model"] = {"anyOf": [{"type": "string", "enum": list(model_names)}, {"type": "null"}],
                                      "default": None, "description": "a loaded model; the default when absent"}
    request["description"] = (f"At most {limits.max_body_bytes} bytes of JSON (checked before parsing: 413). The "
                              "limits below are the handler's own checks, in the schema.")
    request["x-max-body-bytes"] = limits.max_body_bytes
    common = {"413": _error(f"a body over {limits.max_body_bytes} bytes (refused before parsing)"),
              "422": _error(f"not valid against this schema: the body is not UTF-8 JSON or not the object described, "
                            f"no text, more than {limits.max_texts} texts, a text over {limits.max_chars} characters, "
                            "or a blank text"),
              "500": _error("the prediction failed; the others go on (error_id in the log)")}
    if api_key:
        doc["components"]["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            guarded = path.startswith("/v1/") or path == "/metrics"
            if api_key and guarded:
                op["security"] = [{"ApiKey": []}]
                responses["401"] = _error("missing or wrong API key (X-API-Key header, or Authorization: Bearer)")
            if path == "/v1/classify" and method == "post":
                responses.update(common)
                responses["404"] = _error("the model named is not loaded")
                responses["503"] = _error("the model is still warming up")
            if path == "/readyz":
                responses["503"] = _error("a model is still warming up (waiting_for names them)")
            if path == "/metrics":
                responses["200"] = {"description": "Prometheus text exposition format",
                                    "content": {metrics_type: {"schema": {"type": "string"}}}}
    return doc
