"""CRM customer records, topic `crm.customers` (CONTRACT.md, input 2).

The topic is compacted and keyed by `customer_id`; a record with a null value
(a tombstone) deletes the customer. A tombstone has no payload to validate, so
it is a marker (`Tombstone`), not a `Customer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Identifier, SafeJson, UtcDatetime

ShortText = Annotated[str, Field(min_length=1, max_length=256)]


class CustomerTier(StrEnum):
    PLATINUM = "platinum"
    GOLD = "gold"
    STANDARD = "standard"


class Customer(BaseModel):
    """The latest CRM view of one customer.

    `extra="allow"`: the CRM owns this record and downstream consumers (alert
    webhooks, ClickHouse) may want fields we do not model, so unknown fields
    are kept and dumped again (`model_dump()` / `model_extra`) unchanged. Their
    numbers must be ones a 64-bit float holds (CONTRACT.md v1.2): a bigger
    integer would pass here and break every JSON writer downstream.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, SafeJson] = Field(init=False)

    customer_id: Identifier
    name: ShortText
    tier: CustomerTier
    region: ShortText | None = None
    account_manager: ShortText | None = None
    updated_at: UtcDatetime | None = None


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A null value on `crm.customers`: the customer keyed by the record is deleted."""


TOMBSTONE = Tombstone()
