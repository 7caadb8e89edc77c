"""A knitwear chain's EPCIS 2.0 events shaped like the standard's examples, and the
`@context` variants they are posted with (tests/gateway/test_gateway_epcis_standard.py;
test_epcis_hash.py checks their pre-hash strings against the reference implementation).
"""

from __future__ import annotations

from typing import Any

PO = {"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:4012345000009:PO-7001"}
HASH_ID = "ni:///sha-256;" + "3f2a" * 16 + "?ver=CBV2.0"

CONTEXTS: list[Any] = [
    "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
    ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
    [
        "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
        {"example": "https://ns.example.com/epcis/"},
    ],
    [
        {"example": "https://ns.example.com/epcis/"},
        "https://gs1.github.io/EPCIS/epcis-context.jsonld",
    ],
]

KNITWEAR: list[dict[str, Any]] = [
    {
        "type": "TransformationEvent",
        "eventTime": "2027-04-01T08:00:00.000+05:30",
        "eventTimeZoneOffset": "+05:30",
        "eventID": HASH_ID,
        "inputQuantityList": [
            {"epcClass": "urn:epc:class:lgtin:4012345.011117.Y-7001", "quantity": 80, "uom": "KGM"}
        ],
        "outputQuantityList": [
            {
                "epcClass": "urn:epc:class:lgtin:4012345.011124.D-7001",
                "quantity": 78.5,
                "uom": "KGM",
            }
        ],
        "bizStep": "urn:epcglobal:cbv:bizstep:commissioning",
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00021.0"},
        "bizTransactionList": [PO],
    },
    {
        "type": "ObjectEvent",
        "eventTime": "2027-04-02T09:30:00.000",
        "eventTimeZoneOffset": "+01:00",
        "action": "OBSERVE",
        "quantityList": [
            {
                "epcClass": "urn:epc:class:lgtin:4012345.011124.D-7001",
                "quantity": 78.5,
                "uom": "KGM",
            }
        ],
        "bizStep": "https://ref.gs1.org/cbv/BizStep-arriving",
        "disposition": "https://ref.gs1.org/cbv/Disp-in_progress",
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00031.0"},
        "bizTransactionList": [
            {"type": "urn:epcglobal:cbv:btt:po", "bizTransaction": PO["bizTransaction"]}
        ],
        "example:shade": {"#text": "navy"},
    },
    {
        "type": "AggregationEvent",
        "eventTime": "2027-04-05T10:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "parentID": "urn:epc:id:sscc:4012345.0000007001",
        "childEPCs": ["urn:epc:id:sgtin:4012345.054321.1", "urn:epc:id:sgtin:4012345.054321.2"],
        "childQuantityList": [
            {"epcClass": "urn:epc:class:lgtin:4012345.054321.B-7001", "quantity": 24, "uom": "H87"}
        ],
        "action": "ADD",
        "bizStep": "packing",
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00061.0"},
        "bizTransactionList": [
            {"type": "https://ref.gs1.org/cbv/BTT-po", "bizTransaction": PO["bizTransaction"]}
        ],
    },
    {
        "type": "AssociationEvent",
        "eventTime": "2027-04-05T10:05:00+00:00",
        "eventTimeZoneOffset": "+00:00",
        "eventID": "urn:uuid:2b0f2d1e-4c2b-4f4e-9a51-7c8d9e0f1a23",
        "parentID": "urn:epc:id:grai:4012345.55555.7",
        "childQuantityList": [
            {"epcClass": "urn:epc:class:lgtin:4012345.054321.B-7001", "quantity": 24, "uom": "H87"}
        ],
        "action": "ADD",
        "bizStep": "assembling",
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00061.0"},
        "bizTransactionList": [PO],
    },
    {
        "type": "TransactionEvent",
        "eventTime": "2027-04-06T16:00:00.000-05:00",
        "eventTimeZoneOffset": "-05:00",
        "eventID": "ni:///sha-256;" + "ab" * 32 + "?ver=CBV2.0",
        "parentID": "urn:epc:id:sscc:4012345.0000007001",
        "quantityList": [
            {"epcClass": "urn:epc:class:lgtin:4012345.054321.B-7001", "quantity": 24, "uom": "H87"}
        ],
        "action": "ADD",
        "bizStep": "cbv:BizStep-shipping",
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00071.0"},
        "bizTransactionList": [
            {"type": "desadv", "bizTransaction": "urn:epcglobal:cbv:bt:4012345000009:ASN-1"},
            PO,
        ],
    },
]
