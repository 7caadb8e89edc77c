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

_ERROR = {
    "description": "",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayError"}}},
}
_RESPONSES: dict[str, str] = {
    "202": "Every accepted item (and every dead letter in partial mode) is committed to Kafka.",
    "401": "No or unknown bearer token.",
    "403": "The token's role may not post here, or a unit posted another unit's id.",
    "413": "More bytes or items than the gateway accepts in one request.",
    "415": "Neither JSON nor NDJSON.",
    "422": "Invalid items (all-or-nothing mode): nothing was published; see `items`.",
    "503": "Kafka unavailable: nothing was published; retry after `Retry-After` seconds.",
}


def _body(endpoint: Endpoint, ref: dict[str, Any]) -> dict[str, Any]:
    if endpoint.name == "epcis":
        content = {"application/json": {"schema": ref}, "application/ld+json": {"schema": ref}}
    else:
        content = {
            "application/json": {"schema": {"oneOf": [ref, {"type": "array", "items": ref}]}},
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One JSON object per line."}
            },
        }
    return {"required": True, "content": content}


def install_openapi(app: FastAPI, endpoints: Iterable[Endpoint]) -> None:
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
        schemas.update(defs.get("$defs", {}))
        schemas["GatewayError"] = {
            "type": "object",
            "required": ["request_id", "error", "detail"],
            "properties": {
                "request_id": {"type": "string"},
                "error": {"type": "string"},
                "detail": {"type": "string"},
                "items": {"type": "array", "items": {"type": "object"}},
            },
        }
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for endpoint in endpoints:
            operation = doc["paths"][endpoint.path]["post"]
            ref = refs[(MODELS[endpoint.name], "validation")]
            operation["requestBody"] = _body(endpoint, ref)
            operation["security"] = [{"bearer": []}]
            operation["responses"] = {
                code: (
                    {
                        "description": text,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                    if code == "202"
                    else {**_ERROR, "description": text}
                )
                for code, text in _RESPONSES.items()
            }
        delete = doc["paths"]["/v1/customers/{customer_id}"]["delete"]
        delete["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
