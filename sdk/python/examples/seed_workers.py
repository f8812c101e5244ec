"""The seed pipeline's four workers as no-ops on the Python SDK, for `job-manager-tools bench all`:
they return what the benchmark's Rust no-op workers return (tools/src/bench/workers.rs), so a
seed-shaped job runs to the end and the time is the SDK's and the service's, not the work's.

    PYTHONPATH=sdk/python python sdk/python/examples/seed_workers.py [--concurrency N]

One process, one Worker (with a connection of its own) per worker id, each on a thread;
JOB_MANAGER_AMQP_URL and JOB_MANAGER_PREFIX as for any worker. Stops on SIGTERM or SIGINT, and
with --stop-on-stdin-eof when its stdin closes (the benchmark holds it open, so the workers end
with the benchmark however it ends).
"""

import argparse
import logging
import signal
import sys
import threading

from job_manager_worker import Worker

SENSORS = 14


def import_csv(inputs, configs):
    return {"csv_file": "csv-%s" % inputs["source_file"]}


def trim_csv(inputs, configs):
    return {"output_csv": "trim-%s" % inputs["input_csv"]}


def split_by_sensor(inputs, configs):
    table = inputs["input_csv"]
    return [{"unique_id": "sensor-%02d" % n, "result_table": "%s-%02d" % (table, n)} for n in range(1, SENSORS + 1)]


def sink(inputs, configs):
    return None


HANDLERS = {"import-csv": import_csv, "trim-csv": trim_csv, "split-by-sensor": split_by_sensor, "sink": sink}


def main():
    parser = argparse.ArgumentParser(description="The seed pipeline's workers as no-ops on the Python SDK")
    parser.add_argument("--concurrency", type=int, default=1, help="handlers at once, per worker id")
    parser.add_argument("--stop-on-stdin-eof", action="store_true", help="stop when stdin closes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.stop_on_stdin_eof:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    threads = [threading.Thread(target=Worker(worker_id, handler, concurrency=args.concurrency).run, args=(stop,),
                                name=worker_id)
               for worker_id, handler in HANDLERS.items()]
    for thread in threads:
        thread.start()
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
