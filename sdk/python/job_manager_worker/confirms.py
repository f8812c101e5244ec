"""The session's channel for results: publisher confirms without waiting for each one.

pika's ``BlockingChannel.basic_publish`` waits for its confirm, so one connection publishes one
result per broker round trip (about 2 ms on a busy two-core machine), and that capped a worker
near 300 results/s whatever its concurrency. This channel publishes at once and settles each
result when its confirm arrives, possibly many at a time (``multiple``).

It drives the blocking channel's underlying asynchronous channel (``BlockingChannel._impl``, a
``pika.channel.Channel``, whose ``basic_publish`` and ``confirm_delivery`` are pika's public
asynchronous API). That attribute is pika's own, present from 0.10 to 1.3; the SDK asks for
pika 1.x, and ``scripts/sdk-test.sh`` tests the version it pins. Everything here runs on the
connection's thread.
"""

import pika
import pika.exceptions

#: How long one wait for the broker's ``Confirm.SelectOk`` may block the thread.
SELECT_POLL_S = 0.01


class ResultChannel:
    """Publishes results in confirm mode without waiting; ``on_confirmed(token)`` runs, on the
    connection's thread, for each result the broker confirmed, in the order published."""

    def __init__(self, connection, on_confirmed):
        self._connection = connection
        self._on_confirmed = on_confirmed
        self._channel = connection.channel()
        self._async = self._channel._impl  # noqa: SLF001 - see the module's doc
        self._sequence = 0
        #: Publish sequence number → the token of a result not confirmed yet.
        self._unconfirmed = {}
        self._confirmations = []
        selected = []
        self._async.confirm_delivery(ack_nack_callback=self._on_confirmation, callback=selected.append)
        while not selected:
            connection.process_data_events(time_limit=SELECT_POLL_S)

    @property
    def unconfirmed(self):
        """Results published and not confirmed yet."""
        return len(self._unconfirmed)

    def publish(self, routing_key, body, properties, token):
        """Publishes ``body`` to ``routing_key`` through the default exchange; ``token`` is handed
        to ``on_confirmed`` once the broker has it."""
        self._async.basic_publish(exchange="", routing_key=routing_key, body=body, properties=properties)
        self._sequence += 1
        self._unconfirmed[self._sequence] = token

    def _on_confirmation(self, frame):
        # Called from inside pika's I/O processing, where nothing may block or publish: keep the
        # frame, and settle from the connection's event dispatch.
        self._confirmations.append(frame.method)
        self._connection.call_later(0, self._settle)

    def _settle(self):
        confirmations, self._confirmations = self._confirmations, []
        for method in confirmations:
            if method.multiple:
                sequences = sorted(n for n in self._unconfirmed if n <= method.delivery_tag)
            else:
                sequences = [method.delivery_tag] if method.delivery_tag in self._unconfirmed else []
            tokens = [self._unconfirmed.pop(n) for n in sequences]
            if isinstance(method, pika.spec.Basic.Nack):
                # As a blocking publish would: the session ends, and the dispatches of the lost
                # results come back from the broker.
                raise pika.exceptions.NackError([])
            for token in tokens:
                self._on_confirmed(token)
