"""The monitoring engine's topics, tables and agents on one faust app.

Lifecycle and guarantees:
- Every agent runs at concurrency 1 (faust #606) with at-least-once delivery,
  and takes its records in batches (`take_events`, acked after the batch). A
  batch is grouped per key: each key's value is read once, its records applied
  in offset order, the key derived once, written once, and only the alert
  differences and one snapshot sent. Redelivered inputs find their
  `event_id`/offset already known and do nothing. On the event clock (replays,
  backtests) an order's derivation waits while more order records are on their
  way, and is made before the inputs that owe it are committed
  (`OrderAgents.settle`).
- The agents of one worker share the tables, so each handles one batch at a
  time under one lock (`EngineRuntime.turn`): read a value, write it back, send
  its outputs. No agent can then publish an alert version older than one
  another agent has already sent. Every output, and each key's table changelog
  record (one per key and batch, `EngineRuntime.put`), goes straight to the
  worker's aiokafka producer (`output_sender.OutputSender`); faust flushes the
  producer before it commits offsets, and the flush waits until Kafka
  acknowledged every output and changelog record (a failed one stops the commit).
- A record whose handling raises is dead-lettered (`processing_error`) and the
  agent goes on: nothing is dropped silently (CONTRACT v1.2).
- State lives only in changelog-backed tables keyed by the partition key:
  orders by `order_id`, customers by `customer_id`, units by `unit_id`. The
  in-memory indexes (deadlines, subscribers, unit occupancy) are caches of
  those tables, rebuilt after recovery. What each key keeps is bounded
  (streams.engine.limits).
- After recovery every alert the worker owns is announced again (consumers
  keep the latest per `alert_id`), which heals outputs lost in a crash, and so
  is each owned order's snapshot whose step's input is not committed
  (`OrderAgents._unsent_snapshots`; consumers keep the newest version).
- Each engine has its own Prometheus registry (`runtime.metrics.registry`) and
  an observer (`Engine.observer`) that refreshes its gauges every few seconds
  on the app's loop and answers `/healthz` and `/readyz` (streams.engine.metrics).

The parts: `OrderAgents` (scans, order records, join answers, the clock),
`CustomerAgents` (CRM records, subscriptions), `UnitAgents` (unit status,
occupancy), on one shared `EngineRuntime`.
"""

from __future__ import annotations

import faust

from streams.engine.customer_agents import CustomerAgents
from streams.engine.messages import CUSTOMER_INBOX, ORDER_INBOX, UNIT_INBOX
from streams.engine.metrics import REFRESH_S, EngineObserver
from streams.engine.order_agents import OrderAgents
from streams.engine.runtime import EngineConfig, EngineRuntime
from streams.engine.unit_agents import UnitAgents
from streams.topics import CUSTOMERS, ORDERS, SCANS, UNIT_STATUS

__all__ = ["Engine", "EngineConfig", "register_engine"]


class Engine:
    """Registers the engine on `app`; one instance per app, no module-level state."""

    def __init__(self, app: faust.App, config: EngineConfig) -> None:
        self.runtime = rt = EngineRuntime(app, config)
        self.orders = OrderAgents(rt)
        self.customers = CustomerAgents(rt)
        self.units = UnitAgents(rt)

        rt.order_table.on_recover(self.orders.on_recovered)
        rt.subscription_table.on_recover(self.customers.on_recovered)
        rt.occupancy_table.on_recover(self.units.on_occupancy_recovered)
        rt.unit_table.on_recover(self.units.on_units_recovered)

        rt.agent(rt.scans_topic, "scans", self.orders.on_scans, SCANS)
        rt.agent(rt.orders_topic, "orders", self.orders.on_order_records, ORDERS)
        rt.agent(rt.order_inbox, "order-inbox", self.orders.on_inbox, ORDER_INBOX)
        rt.agent(rt.customers_topic, "customers", self.customers.on_customers, CUSTOMERS)
        rt.agent(rt.customer_inbox, "customer-inbox", self.customers.on_inbox, CUSTOMER_INBOX)
        rt.agent(rt.unit_status_topic, "unit-status", self.units.on_statuses, UNIT_STATUS)
        rt.agent(rt.unit_inbox, "unit-inbox", self.units.on_inbox, UNIT_INBOX)
        if config.clock == "live":
            app.timer(config.tick_interval_s, name="deadline-ticks")(self.orders.tick_due)

        self.observer = EngineObserver(
            rt,
            {
                SCANS: rt.scans_topic,
                ORDERS: rt.orders_topic,
                ORDER_INBOX: rt.order_inbox,
                CUSTOMERS: rt.customers_topic,
                CUSTOMER_INBOX: rt.customer_inbox,
                UNIT_STATUS: rt.unit_status_topic,
                UNIT_INBOX: rt.unit_inbox,
            },
        )
        # faust's timers first sleep their interval: without the one-shot task (run
        # once table recovery is done) `/readyz` said "starting" for REFRESH_S after
        # the worker was ready, and every replay waited that long for its group.
        app.task(self.observer.refresh)
        app.timer(REFRESH_S, name="worker-metrics")(self.observer.refresh)


def register_engine(app: faust.App, config: EngineConfig) -> Engine:
    return Engine(app, config)
