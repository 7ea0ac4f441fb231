"""JSON request bodies validated straight from their bytes.

For a body parameter FastAPI decodes the JSON with ``json.loads`` and then
validates the Python objects. On the ingestion route, with 1,000 interactions
per request, those two steps took about half of the API process's time under
load; pydantic's own parser (``model_validate_json``) does both in one pass.
:func:`json_body` is that as a dependency. Errors keep FastAPI's shape: a body
that is not JSON, or does not match the model, is a 422 whose ``detail`` lists
the errors with ``loc`` starting at ``"body"``.

Such a route has no body parameter, so :func:`openapi_body` describes the body
in its OpenAPI operation and :func:`document_models` adds the models to the
document's components.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

_SCHEMA_REF = "#/components/schemas/{model}"

M = TypeVar("M", bound=BaseModel)


def _is_json(content_type: str | None) -> bool:
    """No Content-Type, application/json or application/*+json (as FastAPI decides)."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency giving the request body as ``model``."""

    async def parse(request: Request) -> M:
        body = await request.body()
        if not _is_json(request.headers.get("content-type")):
            raise RequestValidationError([{
                "type": "content_type", "loc": ("body",), "input": None,
                "msg": "Content-Type must be application/json",
            }])
        try:
            return model.model_validate_json(body)
        except ValidationError as error:
            raise RequestValidationError([_located(e) for e in error.errors(include_url=False)
                                          ]) from None

    return parse


def _located(error: Any) -> dict[str, Any]:
    """A pydantic error as FastAPI reports a body error; the input of a JSON
    syntax error (the raw bytes) as text, so it can be echoed back."""
    located = {**error, "loc": ("body", *error["loc"])}
    if isinstance(located.get("input"), bytes):
        located["input"] = located["input"].decode("utf-8", "replace")
    return located


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body is ``model`` read by :func:`json_body`:
    the body, and the 422 FastAPI documents for a body parameter."""
    def json_of(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": _SCHEMA_REF.format(model=name)}}}

    return {
        "requestBody": {"required": True, "content": json_of(model.__name__)},
        "responses": {"422": {"description": "Validation Error",
                              "content": json_of("HTTPValidationError")}},
    }


def document_models(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add ``models`` (and the models they use) to ``app``'s OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template=_SCHEMA_REF)
                for name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas.setdefault(model.__name__, schema)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]
