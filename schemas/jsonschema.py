"""Generate the JSON Schemas of the contract: `python -m schemas.jsonschema [--check]`.

The pydantic models are the source of truth; `schemas/json/*.schema.json` are
derived, committed so that non-Python producers (stage units, the CRM export)
can validate against them, and kept honest by `--check` (run in the tests):
it exits 1 and names every file that would change.

Models of other modules are registered by name and loaded only if their module
exists, so adding one is one `SchemaEntry` line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

JSON_DIR = Path(__file__).parent / "json"
SUFFIX = ".schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True, slots=True)
class SchemaEntry:
    """One generated file: `<name>.schema.json` from `module.attr`.

    Inputs use the validation schema (what we accept); outputs use the
    serialization schema (what we write, e.g. timestamps as strings).
    """

    name: str
    module: str
    attr: str
    mode: JsonSchemaMode = "validation"


REGISTRY: tuple[SchemaEntry, ...] = (
    SchemaEntry("order", "schemas.orders", "OrderRecord"),
    SchemaEntry("customer", "schemas.customers", "Customer"),
    SchemaEntry("scan_event", "schemas.scans", "ScanEvent"),
    SchemaEntry("unit_status", "schemas.unit_status", "UnitStatus"),
    SchemaEntry("replay_line", "schemas.replay", "ReplayLine"),
    SchemaEntry("dead_letter", "schemas.dead_letter", "DeadLetter", "serialization"),
    SchemaEntry("alert", "schemas.alerts", "Alert", "serialization"),
    SchemaEntry("order_state", "schemas.order_state", "OrderState", "serialization"),
    SchemaEntry("plan", "schemas.plan", "SlaPlan"),
)


def load(entry: SchemaEntry) -> type[BaseModel] | None:
    """The entry's model, or None if its module or class does not exist (yet).

    Only a missing module or attribute is tolerated; a module that fails to
    import for any other reason is a bug and raises.
    """
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name == entry.module:
            return None
        raise
    model = getattr(module, entry.attr, None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    return None


def render(model: type[BaseModel], mode: JsonSchemaMode) -> str:
    """Stable text: sorted keys, 2-space indent, trailing newline (readable diffs)."""
    schema = {"$schema": DRAFT, **model.model_json_schema(mode=mode)}
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> content for every registered model that is importable."""
    files: dict[str, str] = {}
    for entry in REGISTRY:
        model = load(entry)
        if model is not None:
            files[entry.name + SUFFIX] = render(model, entry.mode)
    return files


def stale(out_dir: Path = JSON_DIR) -> list[Path]:
    """Files that `write` would create, change or delete."""
    wanted = generate()
    changed = [
        out_dir / name
        for name, text in wanted.items()
        if not (out_dir / name).is_file() or (out_dir / name).read_text("utf-8") != text
    ]
    extra = [path for path in out_dir.glob("*" + SUFFIX) if path.name not in wanted]
    return sorted(changed + extra)


def write(out_dir: Path = JSON_DIR) -> list[Path]:
    """Bring `out_dir` up to date; returns the paths written or deleted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = generate()
    touched = stale(out_dir)
    for path in touched:
        if path.name in wanted:
            path.write_text(wanted[path.name], "utf-8")
        else:
            path.unlink()
    return touched


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.jsonschema", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file would change"
    )
    parser.add_argument("--out", type=Path, default=JSON_DIR, help="output folder")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.out)
        for path in outdated:
            print(f"out of date: {path}", file=sys.stderr)
        if outdated:
            print("run: python -m schemas.jsonschema", file=sys.stderr)
        return 1 if outdated else 0
    for path in write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
