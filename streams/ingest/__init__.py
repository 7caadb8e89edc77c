"""The HTTP / EPCIS ingest gateway: `streams.ingest.app.create_gateway_app(settings, tokens, ...)`.

Empty on purpose: `streams.ingest.settings` is read by every process's settings,
and importing it must not import the gateway's web framework.
"""
