"""`/docs`: the gateway's OpenAPI document as one self-contained HTML page.

FastAPI's `/docs` is Swagger UI, whose script and stylesheet come from a CDN:
on a plant network without internet the page stayed blank, and so did ReDoc's.
This page is rendered by the gateway itself from its own OpenAPI document
(`streams.ingest.openapi`), with no script and nothing from another host: every
operation with its method, path, summary, description, request body (the schema
per content type) and answers (status codes with what they mean), and a link to
`/openapi.json` for tools (relative, so it holds behind a proxy's path prefix). It
is built once, at start-up: serving it costs a lookup.
"""

from __future__ import annotations

import html
import re
from typing import Any, Final

_CODE: Final = re.compile(r"`([^`]+)`")

_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
"""The keys of an OpenAPI path item that are operations: the others (`parameters`,
`summary`, `description`, `servers`) describe the path, and are not one to render."""

_STYLE: Final = """
body { font-family: sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; color: #222; }
h2 { margin-top: 2em; font-family: monospace; font-size: 1.1em; }
.method { display: inline-block; min-width: 4.5em; padding: 0.1em 0.4em; color: #fff;
  background: #555; border-radius: 3px; text-align: center; }
.post { background: #2a7d2e; } .get { background: #1f5f9e; } .delete { background: #a8322d; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
code { background: #f2f2f2; padding: 0 0.2em; }
"""


def _text(value: object) -> str:
    """Escaped text, with the document's `code` spans kept as code."""
    return _CODE.sub(r"<code>\1</code>", html.escape(str(value)))


def schema_name(schema: dict[str, Any]) -> str:
    """What a request body schema is, in a few words: the component it names, an array
    or a choice of them, else its type, else "any JSON"."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for choice in ("oneOf", "anyOf"):
        if choice in schema:
            return " or ".join(schema_name(option) for option in schema[choice])
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return f"array of {schema_name(schema['items'])}"
    if isinstance(schema.get("type"), str):
        return str(schema["type"])
    return "any JSON"


def _operation(method: str, path: str, operation: dict[str, Any]) -> str:
    parts = [
        f'<h2 id="{html.escape(f"{method}-{path}")}"><span class="method {method}">'
        f"{method.upper()}</span> {html.escape(path)}</h2>",
        f"<p><strong>{_text(operation.get('summary', ''))}</strong></p>",
    ]
    if operation.get("description"):
        parts.append(f"<p>{_text(operation['description'])}</p>")
    if operation.get("security"):
        parts.append("<p>Needs <code>Authorization: Bearer &lt;token&gt;</code>.</p>")
    content = operation.get("requestBody", {}).get("content", {})
    if content:
        rows = "".join(
            f"<tr><td><code>{html.escape(media)}</code></td>"
            f"<td>{_text(schema_name(body.get('schema', {})))}</td></tr>"
            for media, body in content.items()
        )
        parts.append("<table><tr><th>request body</th><th>schema</th></tr>" + rows + "</table>")
    answers = "".join(
        f"<tr><td>{html.escape(code)}</td><td>{_text(answer.get('description', ''))}</td></tr>"
        for code, answer in sorted(operation.get("responses", {}).items())
    )
    parts.append("<table><tr><th>answer</th><th>meaning</th></tr>" + answers + "</table>")
    return "\n".join(parts)


def render_docs_page(spec: dict[str, Any]) -> str:
    """The page for `spec` (an OpenAPI 3 document): every operation, in its order."""
    info = spec.get("info", {})
    title = html.escape(str(info.get("title", "API")))
    operations = [
        (method, path, operation)
        for path, methods in spec.get("paths", {}).items()
        for method, operation in methods.items()
        if method in _METHODS  # so a method is safe in HTML as it is
    ]
    index = "".join(
        f'<li><a href="#{html.escape(f"{m}-{p}")}">{m.upper()} {html.escape(p)}</a></li>'
        for m, p, _ in operations
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{title} <small>{html.escape(str(info.get('version', '')))}</small></h1>\n"
        f"<p>{_text(info.get('description', ''))}</p>\n"
        '<p>The OpenAPI document, for tools: <a href="openapi.json">/openapi.json</a>. '
        "Every error has one JSON shape, <code>GatewayError</code> "
        "(<code>request_id</code>, <code>error</code>, <code>detail</code>).</p>\n"
        f"<ul>{index}</ul>\n"
        + "\n".join(_operation(m, p, o) for m, p, o in operations)
        + "\n</body></html>\n"
    )
