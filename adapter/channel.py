"""The send stage: a channel per wire format, behind one small interface.

A channel sends what the decision stage hands it, with the choice made for each event, and answers with one
Delivery per event, in the order given. It never decides to skip: adapter.pipeline.decide() has done so already.

- EventsChannel: the article's format, one POST per event (adapter.alert24.Alert24Client.send).
- RestChannel: Alert24's documented REST API, each event the calls its incident's lifecycle needs
  (adapter.lifecycle, around the pure rest.step()).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import rest, traffic
from .alert24 import REST_KEY, Alert24Client, Delivery
from .ledger import Ledger
from .lifecycle import Lifecycle
from .mapping import Event
from .outcome import Note


class Channel(Protocol):
    """One wire format's way to Alert24."""

    def send(
        self, events: Sequence[Event], choices: Sequence[traffic.Choice], deadline: float, request_id: str
    ) -> list[Delivery]:
        """Every event's Delivery, in order, by the deadline (time.monotonic)."""

    def paused_until(self) -> float:
        """The Unix time before which Alert24 must not be called on this channel (0: now)."""

    def unrecorded(self) -> set[str]:
        """The keys whose record the channel itself could not write to the ledger while sending."""

    def notes(self) -> list[Note]:
        """What the channel met while sending, for the report to log."""


class EventsChannel:
    """The events format: one POST per event to the integration key's endpoint."""

    def __init__(self, client: Alert24Client, integration_key: str):
        self.client, self.integration_key = client, integration_key

    def send(
        self, events: Sequence[Event], choices: Sequence[traffic.Choice], deadline: float, request_id: str
    ) -> list[Delivery]:
        return self.client.send(events, self.integration_key, deadline, request_id) if events else []

    def paused_until(self) -> float:
        return self.client.backpressure.paused_until(traffic.key_id(self.integration_key))

    def unrecorded(self) -> set[str]:
        return set()

    def notes(self) -> list[Note]:
        return []


class RestChannel:
    """The REST format: each event's incident created, updated, checked or resolved (adapter.lifecycle). The ledger's
    `records` of the keys where read already (None: the lifecycle reads them, and without them looks every incident
    up at Alert24)."""

    def __init__(
        self,
        client: Alert24Client,
        ledger: Ledger | None,
        route: str,
        lease: float,
        records: dict[str, rest.Record] | None,
    ):
        self.client, self.ledger, self.route, self.lease, self.records = client, ledger, route, lease, records
        self._lifecycle: Lifecycle | None = None

    def send(
        self, events: Sequence[Event], choices: Sequence[traffic.Choice], deadline: float, request_id: str
    ) -> list[Delivery]:
        if not events:
            return []
        self._lifecycle = Lifecycle(self.client, self.ledger, self.route, deadline, request_id, self.lease)
        return self._lifecycle.deliver(events, choices, self.records)

    def paused_until(self) -> float:
        return self.client.backpressure.paused_until(REST_KEY)

    def unrecorded(self) -> set[str]:
        return set(self._lifecycle.unrecorded) if self._lifecycle is not None else set()

    def notes(self) -> list[Note]:
        return list(self._lifecycle.notes) if self._lifecycle is not None else []
