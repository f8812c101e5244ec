"""Encoding a stage-result: what the coordinator cannot take becomes an error result (no broker)."""

import json
import math

import pytest

from job_manager_worker.worker import MAX_RESULT_BYTES, MAX_TEXT_BYTES, encode_result


def sent(outputs, log_text=None, error=None):
    return json.loads(encode_result("t1", "j1", outputs, log_text, error))


class Opaque:
    pass


@pytest.mark.parametrize("outputs, reason", [
    ({"words": {1, 2}}, "Object of type set is not JSON serializable"),
    ({"words": b"raw"}, "Object of type bytes is not JSON serializable"),
    ({"words": Opaque()}, "Object of type Opaque is not JSON serializable"),
    ({"words": math.nan}, "nan is not a JSON number (at $.words)"),
    ([None, {"words": [1, -math.inf]}], "-inf is not a JSON number (at $[1].words[1])"),
    ({"words": 2**63}, "integer 9223372036854775808 is outside the signed 64-bit range (at $.words)"),
    ({"words": -2**63 - 1}, "integer -9223372036854775809 is outside the signed 64-bit range (at $.words)"),
    ({"words": "\udcff.csv"}, "UTF-8 cannot encode"),
])
def test_unsendable_outputs_become_an_error_result(outputs, reason):
    result = sent(outputs, log_text="kept")
    assert result["outputs"] is None
    assert result["error"].startswith("outputs cannot be sent as JSON: "), result
    assert reason in result["error"], result
    assert result["log"] == "kept"
    assert (result["task_id"], result["job_id"]) == ("t1", "j1")


def test_a_circular_structure_becomes_an_error_result():
    loop = {}
    loop["self"] = loop
    assert "Circular reference detected" in sent(loop)["error"]


def test_integers_at_the_signed_64_bit_limits_and_booleans_are_sent_as_they_are():
    outputs = {"max": 2**63 - 1, "min": -2**63, "flag": True, "ratio": 0.5, "name": "ß"}
    result = sent(outputs)
    assert result["outputs"] == outputs and result["error"] is None


def test_outputs_over_the_coordinator_limit_become_an_error_result():
    result = sent({"words": "x" * MAX_RESULT_BYTES})
    assert result["outputs"] is None
    assert "more than the %d bytes the coordinator accepts" % MAX_RESULT_BYTES in result["error"]


def test_log_and_error_text_is_cut_and_lone_surrogates_escaped():
    result = sent(None, log_text="a" * (MAX_TEXT_BYTES + 10), error="no file \udcff.csv")
    assert len(result["log"].encode()) <= MAX_TEXT_BYTES + 16 and result["log"].endswith("…[cut]")
    assert result["error"] == "no file \\udcff.csv"


def test_the_dispatch_run_id_is_echoed_when_there_is_one():
    with_run = json.loads(encode_result("t1", "j1", None, None, None, "run-7"))
    assert with_run["run_id"] == "run-7"
    without = json.loads(encode_result("t1", "j1", None, None, None))
    assert "run_id" not in without


def test_a_run_id_that_cannot_be_sent_is_dropped():
    from job_manager_worker.worker import Task
    task = Task({"task_id": "t1", "job_id": "j1", "run_id": "\udcff"})
    assert task.run_id is None
    assert Task({"task_id": "t1", "job_id": "j1", "run_id": "r1"}).run_id == "r1"
