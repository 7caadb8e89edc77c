"""Input topics → raw event tables (and the CRM profile table).

Records are validated with the contract's own `decode_input`; a record that
fails is the engine's dead letter, so here it is only skipped and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiokafka import ConsumerRecord

from schemas.customers import Customer, Tombstone
from schemas.dead_letter import ReasonCode
from schemas.orders import OrderRecord
from schemas.placement import misplaced
from schemas.plan import SlaPlan, load_plan
from schemas.scans import ScanEvent
from schemas.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS
from schemas.unit_status import UnitStatus
from schemas.validation import KEYLESS_TOMBSTONE, RecordRejected, decode_input
from sinks.clickhouse.mapping import (
    RecordForwarded,
    RecordInvalid,
    Row,
    Table,
    compact_json,
    kafka_coordinates,
)


class _InputMapper:
    contract_topic: str = ""

    def __init__(
        self, plan: SlaPlan | None = None, home: Callable[[bytes], int] | None = None
    ) -> None:
        self.plan = plan if plan is not None else load_plan(None)
        self.home = home
        """Where Kafka's default partitioner puts a key: a keyless record read from
        another partition than its id's is forwarded there by the engine and the copy's
        rows are the ones stored; a keyed one is the engine's dead letter, invalid here
        (`schemas.placement`)."""

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> object:
        topic = self.contract_topic
        try:
            value = decode_input(topic, record.value, plan=self.plan, key=record.key)
            away = (
                None
                if self.home is None
                else misplaced(topic, record.key, value, record.partition, self.home)
            )
        except RecordRejected as exc:  # a keyed record elsewhere too: the engine's dead letter
            raise RecordInvalid(str(exc)) from None
        if away is not None:
            raise RecordForwarded(f"forwarded to partition {away.home}")
        return value


class ScanRows(_InputMapper):
    """`scans` → `scans` (raw, append-only)."""

    contract_topic = SCANS
    table = Table.of(
        "scans",
        "event_id",
        "order_id",
        "stage",
        "action",
        "unit_id",
        "event_time",
        "quantity",
        "uom",
        "lot_id",
        "attributes",
    )

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        scan = self._decode(record)
        assert isinstance(scan, ScanEvent)
        row = (
            scan.event_id,
            scan.order_id,
            scan.stage,
            scan.action.value,
            scan.unit_id,
            scan.event_time,
            scan.quantity,
            None if scan.uom is None else scan.uom.value,
            scan.lot_id,
            compact_json(scan.attributes or {}),
            *kafka_coordinates(record),
        )
        return {"scans": [row]}


class OrderEventRows(_InputMapper):
    """`orders` → `order_events` (raw: absent fields stay NULL)."""

    contract_topic = ORDERS
    table = Table.of(
        "order_events",
        "order_id",
        "op",
        "customer_id",
        "product",
        "quantity",
        "placed_at",
        "due_at",
        "route",
        "event_time",
    )

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        order = self._decode(record)
        assert isinstance(order, OrderRecord)
        row = (
            order.order_id,
            order.op.value,
            order.customer_id,
            order.product,
            order.quantity,
            order.placed_at,
            order.due_at,
            list(order.route or ()),
            order.event_time,
            *kafka_coordinates(record),
        )
        return {"order_events": [row]}


class UnitStatusRows(_InputMapper):
    """`unit-status` → `unit_status` (raw)."""

    contract_topic = UNIT_STATUS
    table = Table.of(
        "unit_status",
        "event_id",
        "unit_id",
        "stage",
        "status",
        "reason",
        "event_time",
        "expected_up_at",
    )

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        status = self._decode(record)
        assert isinstance(status, UnitStatus)
        row = (
            status.event_id,
            status.unit_id,
            status.stage,
            status.status.value,
            None if status.reason is None else status.reason.value,
            status.event_time,
            status.expected_up_at,
            *kafka_coordinates(record),
        )
        return {"unit_status": [row]}


class CustomerRows(_InputMapper):
    """`crm.customers` → `customers` (ReplacingMergeTree; tombstone = is_deleted).

    version is the Kafka offset: the topic is keyed by customer_id, so the later
    record of a customer always has the higher offset in its partition.
    """

    contract_topic = CUSTOMERS
    table = Table.of(
        "customers",
        "customer_id",
        "name",
        "tier",
        "region",
        "account_manager",
        "updated_at",
        "extra",
        "is_deleted",
        "version",
    )

    @property
    def tables(self) -> Sequence[Table]:
        return (self.table,)

    def rows(self, record: ConsumerRecord[bytes, bytes]) -> dict[str, list[Row]]:
        customer = self._decode(record)
        if isinstance(customer, Tombstone):
            if not record.key:  # the engine's dead letter: the same reason, said alike
                keyless = RecordRejected(ReasonCode.VALIDATION_FAILED, [KEYLESS_TOMBSTONE])
                raise RecordInvalid(str(keyless))
            customer_id = record.key.decode()  # an identifier: `decode_input` checked it
            row: Row = (customer_id, "", "standard", None, None, None, "{}", 1, record.offset)
        else:
            assert isinstance(customer, Customer)
            row = (
                customer.customer_id,
                customer.name,
                customer.tier.value,
                customer.region,
                customer.account_manager,
                customer.updated_at,
                compact_json(customer.model_extra or {}),
                0,
                record.offset,
            )
        return {"customers": [(*row, *kafka_coordinates(record))]}
