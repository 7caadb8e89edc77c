"""The OpenAPI document of the gateway: request bodies and bearer auth.

Handlers read the raw body themselves (one parse, NDJSON, byte limits), so
FastAPI cannot infer the bodies; they are declared here from the contract's
pydantic models, so `/docs` and schema-driven tests (schemathesis) see the
real shapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas.common import IDENTIFIER_PATTERN
from schemas.customers import Customer
from schemas.epcis import EpcisDocument
from schemas.orders import OrderRecord
from schemas.scans import ScanEvent
from schemas.unit_status import UnitStatus
from streams.ingest.batch import Endpoint

MODELS: dict[str, type[BaseModel]] = {
    "scans": ScanEvent,
    "unit-status": UnitStatus,
    "orders": OrderRecord,
    "customers": Customer,
    "epcis": EpcisDocument,
}
REF = "#/components/schemas/{model}"
ERROR_REF = {"$ref": "#/components/schemas/GatewayError"}
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"

GATEWAY_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "Every error the gateway sends has this shape (`error` is a stable code).",
    "required": ["request_id", "error", "detail"],
    "properties": {
        "request_id": {"type": "string"},
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "loc": {"type": "string", "description": "The parameter at fault (`bad_parameter`)."},
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/ItemResult"}},
    },
}
ITEM_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["index", "status"],
    "properties": {
        "index": {"type": "integer", "minimum": 0},
        "status": {"type": "string", "enum": ["accepted", "rejected", "dead_lettered"]},
        "key": {"type": ["string", "null"]},
        "partition": {"type": "integer"},
        "offset": {"type": "integer"},
        "reason_code": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "dead_letter_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "string"},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
INGEST_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "topic", "accepted", "rejected", "items"],
    "properties": {
        "request_id": {"type": "string"},
        "topic": {"type": "string"},
        "accepted": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/ItemResult"}},
    },
}
TOMBSTONE_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "topic", "key", "partition", "offset"],
    "properties": {
        "request_id": {"type": "string"},
        "topic": {"type": "string"},
        "key": {"type": "string"},
        "partition": {"type": "integer"},
        "offset": {"type": "integer"},
    },
}

INGEST_ERRORS: dict[str, str] = {
    "401": "No or unknown bearer token (checked before anything else).",
    "403": "The token's role may not post here, or a unit token posted another unit's id "
    "or a stage outside its `stages`.",
    "413": "More bytes or items than the gateway accepts in one request, or an item larger "
    "than `max_item_bytes` or than Kafka takes.",
    "415": "Neither JSON nor NDJSON.",
    "422": "No items (an empty body or batch), a bad `partial`, or invalid items "
    "(all-or-nothing mode): nothing was published; see `items`.",
    "503": "Kafka unavailable: nothing was published; retry after `Retry-After` seconds.",
}
EPCIS_ERRORS: dict[str, str] = {
    **INGEST_ERRORS,
    "404": "This gateway has no EPCIS mapping (`--epcis-mapping`).",
}
DELETE_ERRORS: dict[str, str] = {
    "401": INGEST_ERRORS["401"],
    "403": "The token's role may not delete customers.",
    "422": "`customer_id` is not an identifier (1-64 characters of `[A-Za-z0-9._:-]`).",
    "503": INGEST_ERRORS["503"],
}
OPS_FORBIDDEN = "The client is not in `gateway.ops_networks` (loopback by default)."
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}
PARTIAL = {
    "name": "partial",
    "in": "query",
    "required": False,
    "description": "Publish the valid items and dead-letter the rest (default: all or "
    "nothing). With `true`, items that break the request body's schema are accepted into "
    "the dead letters: the answer is 202 with their `dead_letter_id`.",
    "schema": {"type": "boolean", "default": False},
}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(codes: dict[str, str]) -> dict[str, Any]:
    responses = {code: _json_response(text, ERROR_REF) for code, text in codes.items()}
    if "503" in responses:
        responses["503"]["headers"] = RETRY_AFTER
    return responses


def _body(endpoint: Endpoint, ref: dict[str, Any]) -> dict[str, Any]:
    if endpoint.name == "epcis":
        content = {"application/json": {"schema": ref}, "application/ld+json": {"schema": ref}}
    else:
        batch = {"type": "array", "items": ref, "minItems": 1}
        content = {
            "application/json": {"schema": {"oneOf": [ref, batch]}},
            "application/x-ndjson": {
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "description": "One JSON object per line; at least one (blank lines are "
                    "skipped).",
                }
            },
        }
    return {"required": True, "content": content}


def install_openapi(app: FastAPI, endpoints: Iterable[Endpoint]) -> None:
    """Replace FastAPI's inferred document with one that says what the gateway does:
    every status code and content type each operation can send."""
    endpoints = list(endpoints)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        refs, defs = models_json_schema(
            [(model, "validation") for model in MODELS.values()], ref_template=REF
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for fastapi_only in ("HTTPValidationError", "ValidationError"):
            schemas.pop(fastapi_only, None)
        schemas.update(defs.get("$defs", {}))
        schemas["EpcisBody"]["properties"]["eventList"]["minItems"] = 1  # else 422 `empty`
        schemas["GatewayError"] = GATEWAY_ERROR
        schemas["ItemResult"] = ITEM_RESULT
        schemas["IngestResult"] = INGEST_RESULT
        schemas["TombstoneResult"] = TOMBSTONE_RESULT
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        paths = doc["paths"]
        for endpoint in endpoints:
            operation = paths[endpoint.path]["post"]
            ref = refs[(MODELS[endpoint.name], "validation")]
            operation["requestBody"] = _body(endpoint, ref)
            operation["parameters"] = [PARTIAL]
            operation["security"] = [{"bearer": []}]
            accepted = _json_response(
                "Every accepted item (and every dead letter in partial mode) is committed "
                "to Kafka.",
                {"$ref": "#/components/schemas/IngestResult"},
            )
            codes = EPCIS_ERRORS if endpoint.name == "epcis" else INGEST_ERRORS
            operation["responses"] = {"202": accepted, **_errors(codes)}
        delete = paths["/v1/customers/{customer_id}"]["delete"]
        delete["security"] = [{"bearer": []}]
        delete["parameters"] = [
            {
                "name": "customer_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": IDENTIFIER_PATTERN, "maxLength": 64},
            }
        ]
        delete["responses"] = {
            "202": _json_response(
                "The tombstone is committed to `crm.customers`.",
                {"$ref": "#/components/schemas/TombstoneResult"},
            ),
            **_errors(DELETE_ERRORS),
        }
        status = {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}},
        }
        paths["/healthz"]["get"]["responses"] = {"200": _json_response("Serving.", status)}
        ready = paths["/readyz"]["get"]
        ready["responses"] = {
            "200": _json_response("Kafka answers (the cached answer; `age_s` old).", status),
            "503": {**_json_response("Kafka does not answer.", status), "headers": RETRY_AFTER},
            "403": _json_response(OPS_FORBIDDEN, ERROR_REF),
        }
        paths["/metrics"]["get"]["responses"] = {
            "200": {
                "description": "Prometheus text format.",
                "content": {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}},
            },
            "403": _json_response(OPS_FORBIDDEN, ERROR_REF),
        }
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
