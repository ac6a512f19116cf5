"""The lifecycle bus behind GetContainerEvents: CREATED, STARTED, STOPPED, DELETED.

Publishing never blocks the runtime: each subscriber has a bounded queue, and a subscriber
too slow to keep up loses its oldest events and is told how many (the `dropped` counter).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

QUEUE_SIZE = 1024


@dataclass(frozen=True)
class LifecycleEvent:
    container_id: str
    sandbox_id: str
    kind: str  # CREATED | STARTED | STOPPED | DELETED
    at_ns: int


class Subscription:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.queue: collections.deque[LifecycleEvent] = collections.deque(maxlen=QUEUE_SIZE)
        self.ready = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, event: LifecycleEvent) -> None:
        with self.ready:
            if len(self.queue) == self.queue.maxlen:
                self.dropped += 1  # the deque drops the oldest
            self.queue.append(event)
            self.ready.notify()

    def get(self, timeout: float) -> LifecycleEvent | None:
        with self.ready:
            if not self.queue:
                self.ready.wait(timeout)
            return self.queue.popleft() if self.queue else None

    def close(self) -> None:
        self.closed = True
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def publish(self, event: LifecycleEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.put(event)
