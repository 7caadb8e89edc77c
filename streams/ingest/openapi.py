"""The OpenAPI document of the gateway: request bodies and bearer auth.

Handlers read the raw body themselves (one parse, NDJSON, byte limits), so
FastAPI cannot infer the bodies; they are declared here from the contract's
pydantic models, so `/docs` and schema-driven tests (schemathesis) see the
real shapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from copy import deepcopy
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

ERROR_CODES = (
    "unauthorized",
    "forbidden",
    "body_timeout",
    "body_too_slow",
    "too_large",
    "unsupported_media_type",
    "empty",
    "bad_parameter",
    "invalid_items",
    "kafka_unavailable",
    "publish_timeout",
    "publish_failed",
    "topic_not_authorized",
    "shutting_down",
    "overloaded",
    "epcis_not_configured",
    "not_found",
    "method_not_allowed",
    "bad_request",
    "http_error",
    "headers_too_large",
    "too_many_connections",
)
"""Every `error` the gateway answers with, its HTTP layer's too (400 `bad_request`, 431
`headers_too_large`, 503 `too_many_connections`, on any path): a client reads them here
(tests/gateway/test_gateway_openapi_docs.py checks them against the code and the docs)."""
GATEWAY_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "Every error the gateway sends has this shape (`error` is a stable code).",
    "required": ["request_id", "error", "detail"],
    "properties": {
        "request_id": {"type": "string"},
        "error": {
            "type": "string",
            "description": "A stable code: "
            + ", ".join(f"`{code}`" for code in ERROR_CODES)
            + ". Before any operation runs, the HTTP layer answers 400 `bad_request` (not "
            "valid HTTP/1.1), 431 `headers_too_large` or 503 `too_many_connections` on any "
            "path; an operation answers 400 `bad_request` too to `Authorization` or "
            "`Content-Type` given more than once.",
        },
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

REPEATED_HEADER = (
    "`Authorization` or `Content-Type` given more than once (`bad_request`): HTTP allows "
    "each once, and which copy counts is ambiguous (checked before anything else)."
)
INGEST_ERRORS: dict[str, str] = {
    "400": REPEATED_HEADER,
    "401": "No or unknown bearer token (checked before anything but a repeated header).",
    "403": "The token's role may not post here, or a unit token posted another unit's id "
    "or a stage outside its `stages`.",
    "408": "The body did not arrive in full within `body_timeout_s` (30 s by default, "
    "`body_timeout`), or, after `body_rate_grace_s` (5 s), averaged less than "
    "`min_body_bytes_per_s` (240, `body_too_slow`): nothing was published; the connection "
    "is closed.",
    "413": "More bytes or items than the gateway accepts in one request, or an item larger "
    "than `max_item_bytes` or than Kafka takes.",
    "415": "Neither JSON nor NDJSON, a charset other than UTF-8, a parameter name that is "
    "no HTTP token, or a Content-Encoding other than identity.",
    "422": "No items (an empty body or batch), a bad `?partial=`, or invalid items: "
    "nothing was published; see `items`.",
    "503": "Kafka unavailable (`kafka_unavailable`): nothing was published, unless Kafka "
    "stopped answering after the request's commit was sent (`detail` says so); or the "
    "request's `publish_timeout_s` ran out while the gateway's producers were busy "
    "(`publish_timeout`: the same two outcomes); or the gateway itself failed publishing "
    "it, a fault of its own, not Kafka's (`publish_failed`: whether it was published is not "
    "known); or Kafka refuses the gateway a topic of "
    "the request (`topic_not_authorized`: nothing was published); or the "
    "gateway shut down mid-request (`shutting_down`: not known either); or it handles "
    "`limit_concurrency` requests already and none ended within `admission_wait_s` "
    "(`overloaded`), or holds `limit_connections` open connections already "
    "(`too_many_connections`): nothing was published. Retry after `Retry-After` seconds; "
    "posting again is safe.",
}
PARTIAL_422 = "No items (an empty body, batch or `eventList`): nothing was published."
EPCIS_ERRORS: dict[str, str] = {
    **INGEST_ERRORS,
    "404": "This gateway has no EPCIS mapping (`--epcis-mapping`).",
}
DELETE_ERRORS: dict[str, str] = {
    "400": REPEATED_HEADER,
    "401": INGEST_ERRORS["401"],
    "403": "The token's role may not delete customers.",
    "422": "`customer_id` is not an identifier (1-64 characters of `[A-Za-z0-9._:-]`).",
    "503": INGEST_ERRORS["503"],
}
OPS_FORBIDDEN = "The client is not in `gateway.ops_networks` (loopback by default)."
RETRY_AFTER = {
    "Retry-After": {
        "schema": {"type": "integer", "minimum": 1},
        "description": "Seconds: `retry_after_s` plus or minus 40 % at random (rounded down, "
        "at least 1 s either way), so clients refused together come back spread out.",
    }
}
PARTIAL_PREFIX = "/v1/partial"
MAIN_DESCRIPTION = (
    "All or nothing: any invalid item answers 422 and nothing is published. "
    "`?partial=true` on this path is the same as the partial operation "
    "(`POST {partial}`), which documents that mode."
)
PARTIAL_DESCRIPTION = (
    "Partial mode: the valid items are published and every other item is written to "
    "`dead-letter` with its reason, in the same transaction (202; their results say "
    "`dead_lettered` with the `dead_letter_id`). So the body may hold any JSON (or any "
    "NDJSON lines): an item that breaks the all-or-nothing operation's schema "
    "(`POST {strict}`) is dead-lettered, not refused. Refused: no items at all (422 `empty`), "
    "limits (413), another unit's or stage's records (403)."
)
ANY_NDJSON: dict[str, Any] = {
    "type": "string",
    "pattern": "\\S",
    "description": "Lines of text; every non-blank line is an item (JSON or not).",
}


def partial_path(endpoint: Endpoint) -> str:
    """The partial operation's path: `/v1/scans` -> `/v1/partial/scans`."""
    return PARTIAL_PREFIX + endpoint.path.removeprefix("/v1")


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(codes: dict[str, str]) -> dict[str, Any]:
    responses = {code: _json_response(text, ERROR_REF) for code, text in codes.items()}
    if "503" in responses:
        responses["503"]["headers"] = RETRY_AFTER
    return responses


def _partial_body(endpoint: Endpoint, schemas: dict[str, Any], max_items: int) -> dict[str, Any]:
    """Anything with at least one item: every item that is not valid is dead-lettered."""
    if endpoint.name == "epcis":
        # A valid document without events has no items (422); an invalid one is one item.
        no_events = deepcopy(schemas["EpcisDocument"])
        no_events["properties"]["epcisBody"] = {
            "type": "object",
            "required": ["eventList"],
            "properties": {"eventList": {"type": "array", "maxItems": 0}},
        }
        limit = {"properties": {"eventList": {"maxItems": max_items}}}
        document = {
            "not": no_events,
            "properties": {"epcisBody": limit},
            "description": "Any JSON; a body that is not an EPCISDocument is one dead letter.",
        }
        content = {
            "application/json": {"schema": document},
            "application/ld+json": {"schema": document},
        }
    else:
        items = {
            "not": {"type": "array", "maxItems": 0},
            "maxItems": max_items,
            "description": "Any JSON but an empty array: an array's elements are the items "
            "(at most `max_items`), anything else is one item.",
        }
        content = {
            "application/json": {"schema": items},
            "application/x-ndjson": {"schema": ANY_NDJSON},
        }
    return {"required": True, "content": content}


def _body(endpoint: Endpoint, ref: dict[str, Any], max_items: int) -> dict[str, Any]:
    if endpoint.name == "epcis":
        content = {"application/json": {"schema": ref}, "application/ld+json": {"schema": ref}}
    else:
        batch = {"type": "array", "items": ref, "minItems": 1, "maxItems": max_items}
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


def _ingest_operation(operation: dict[str, Any], accepted: str, codes: dict[str, str]) -> None:
    operation["parameters"] = []
    operation["security"] = [{"bearer": []}]
    result = _json_response(accepted, {"$ref": "#/components/schemas/IngestResult"})
    operation["responses"] = {"202": result, **_errors(codes)}


def install_openapi(app: FastAPI, endpoints: Iterable[Endpoint], max_items: int) -> None:
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
        event_list = schemas["EpcisBody"]["properties"]["eventList"]
        event_list["minItems"] = 1  # else 422 `empty`
        event_list["maxItems"] = max_items  # else 413
        schemas["GatewayError"] = GATEWAY_ERROR
        schemas["ItemResult"] = ITEM_RESULT
        schemas["IngestResult"] = INGEST_RESULT
        schemas["TombstoneResult"] = TOMBSTONE_RESULT
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        paths = doc["paths"]
        for endpoint in endpoints:
            operation = paths[endpoint.path]["post"]
            ref = refs[(MODELS[endpoint.name], "validation")]
            operation["requestBody"] = _body(endpoint, ref, max_items)
            operation["description"] = MAIN_DESCRIPTION.format(partial=partial_path(endpoint))
            codes = EPCIS_ERRORS if endpoint.name == "epcis" else INGEST_ERRORS
            _ingest_operation(operation, "Every item is committed to Kafka.", codes)
            partial = paths[partial_path(endpoint)]["post"]
            partial["requestBody"] = _partial_body(endpoint, schemas, max_items)
            partial["description"] = PARTIAL_DESCRIPTION.format(strict=endpoint.path)
            _ingest_operation(
                partial,
                "Every accepted item and every dead letter is committed to Kafka.",
                {**codes, "422": PARTIAL_422},
            )
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
        paths["/healthz"]["get"]["responses"] = {
            "200": _json_response(
                "Serving (`waiting_for`: Kafka, while the topics are not prepared yet).", status
            )
        }
        ready = paths["/readyz"]["get"]
        ready["responses"] = {
            "200": _json_response("Kafka answers (the cached answer; `age_s` old).", status),
            "503": {
                **_json_response(
                    "Kafka does not answer, or the gateway still waits for it to prepare "
                    "its topics (`waiting_for`).",
                    status,
                ),
                "headers": RETRY_AFTER,
            },
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
