"""The HTTP / EPCIS ingest gateway: `create_gateway_app(settings, tokens, mapping, producer)`."""

from streams.ingest.app import create_gateway_app

__all__ = ["create_gateway_app"]
