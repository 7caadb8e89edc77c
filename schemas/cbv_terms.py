"""The CBV 2.0 standard vocabulary's bare names, per vocabulary, for the event hash.

CBV 2.0 section 8.9 expands a *standard* vocabulary element in bare string notation
(`shipping`) to its web URI (`https://ref.gs1.org/cbv/BizStep-shipping`); any other
bare string (`foo`, `receiving_goods`) is no CBV term and stays as sent. The names
are the terms of the EPCIS 2.0 JSON-LD context
(`https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld`, the same in the
`gs1.github.io` copy), which is what GS1's reference implementation expands with.
A term a later CBV adds stays as sent until it is added here.
"""

from __future__ import annotations

from typing import Final

BIZ_STEPS: Final = frozenset(
    [
        "accepting",
        "arriving",
        "assembling",
        "collecting",
        "commissioning",
        "consigning",
        "creating_class_instance",
        "cycle_counting",
        "decommissioning",
        "departing",
        "destroying",
        "disassembling",
        "dispensing",
        "encoding",
        "entering_exiting",
        "holding",
        "inspecting",
        "installing",
        "killing",
        "loading",
        "other",
        "packing",
        "picking",
        "receiving",
        "removing",
        "repackaging",
        "repairing",
        "replacing",
        "reserving",
        "retail_selling",
        "sampling",
        "sensor_reporting",
        "shipping",
        "staging_outbound",
        "stock_taking",
        "stocking",
        "storing",
        "transporting",
        "unloading",
        "unpacking",
        "void_shipping",
    ]
)
DISPOSITIONS: Final = frozenset(
    [
        "active",
        "available",
        "completeness_inferred",
        "completeness_verified",
        "conformant",
        "container_closed",
        "container_open",
        "damaged",
        "destroyed",
        "dispensed",
        "disposed",
        "encoded",
        "expired",
        "in_progress",
        "in_transit",
        "inactive",
        "mismatch_class",
        "mismatch_instance",
        "mismatch_quantity",
        "needs_replacement",
        "no_pedigree_match",
        "non_conformant",
        "non_sellable_other",
        "partially_dispensed",
        "recalled",
        "reserved",
        "retail_sold",
        "returned",
        "sellable_accessible",
        "sellable_not_accessible",
        "stolen",
        "unavailable",
        "unknown",
    ]
)
BIZ_TRANSACTION_TYPES: Final = frozenset(
    [
        "bol",
        "cert",
        "desadv",
        "inv",
        "pedigree",
        "po",
        "poc",
        "prodorder",
        "recadv",
        "rma",
        "testprd",
        "testres",
        "upevt",
    ]
)
SOURCE_DESTINATION_TYPES: Final = frozenset(["location", "owning_party", "possessing_party"])
