"""Subscribe to cleanup events: when a job ends, job-manager publishes ``job.cleanup`` on
``<prefix>.events`` naming every output its intermediate stages produced (every stage but the
pipeline's last; a job with many outputs sends several parts), so the files they name can be
deleted. A job whose intermediate stages produced nothing sends none.

    from job_manager_worker import subscribe_cleanup, cleanup_outputs

    def delete_intermediates(event):
        for stage_id, output in cleanup_outputs(event):
            for value in output.values():
                remove_if_file(value)

    subscribe_cleanup(delete_intermediates, queue="my-cleaner")

Deleting intermediate files means a rerun from a later stage can no longer reuse them (it would
hand the next stage names of files that are gone): keep them for as long as such reruns matter.
"""

import json

import pika

CLEANUP_KEY = "job.cleanup"


def cleanup_outputs(event):
    """The ``(stage_id, output)`` pairs an event names, in stage and task order."""
    return [(stage["stage_id"], output)
            for stage in event.get("stages", [])
            for output in stage.get("outputs", [])
            if isinstance(output, dict)]


def subscribe_cleanup(handler, amqp_url="amqp://guest:guest@127.0.0.1:5672/%2f", prefix="job-manager",
                      queue=None, stop=None):
    """Calls ``handler(event)`` for every cleanup event, until ``stop()`` returns true (asked at
    least once a second) or the connection fails (the error is raised).

    Without ``queue``, events go to a queue of this call's own that RabbitMQ deletes when it
    returns: events published while nobody subscribes are missed. With ``queue``, a durable
    queue of that name (``<prefix>.cleanup.<queue>``) keeps them until the next call; delete it
    when you stop cleaning for good. An event is acknowledged once ``handler`` returned; if it
    raises, the event goes back to the queue and the error is raised. A message that is not JSON
    is acknowledged and skipped.
    """
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        if queue is None:
            name = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        else:
            name = "%s.cleanup.%s" % (prefix, queue)
            channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "%s.events" % prefix, routing_key=CLEANUP_KEY)
        channel.basic_qos(prefetch_count=1)
        for method, _properties, body in channel.consume(name, inactivity_timeout=1):
            if stop is not None and stop():
                break
            if method is None:
                continue
            try:
                event = json.loads(body)
            except ValueError:
                channel.basic_ack(method.delivery_tag)
                continue
            try:
                handler(event)
            except BaseException:
                channel.basic_nack(method.delivery_tag, requeue=True)
                raise
            channel.basic_ack(method.delivery_tag)
        channel.cancel()
    finally:
        if connection.is_open:
            connection.close()
