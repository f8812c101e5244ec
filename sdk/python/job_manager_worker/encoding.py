"""A stage-result's body: strict JSON the coordinator takes whole, or an error result that says
why the outputs could not be sent."""

import json
import logging
import math

log = logging.getLogger("job_manager_worker")

#: The coordinator keeps integers as signed 64-bit values and refuses a result with any other.
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1
#: The largest result body the coordinator takes; it dead-letters a larger one unread.
MAX_RESULT_BYTES = 4 * 1024 * 1024
#: The coordinator keeps this much of ``log`` and ``error``.
MAX_TEXT_BYTES = 64 * 1024


class UnsendableOutputs(ValueError):
    """The handler's outputs cannot be sent as a JSON stage-result."""


def _first_bad_number(value):
    """``(path, reason)`` of the first number JSON or the coordinator cannot take (NaN, an
    infinity, an integer outside the signed 64-bit range) in ``value``, or ``None``."""
    stack = [("$", value)]
    seen = set()
    while stack:
        path, value = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not MIN_INT <= value <= MAX_INT:
                digits = str(value)
                if len(digits) > 40:
                    digits = "%s… (%d digits)" % (digits[:20], len(digits.lstrip("-")))
                return path, "integer %s is outside the signed 64-bit range" % digits
        elif isinstance(value, float):
            if not math.isfinite(value):
                return path, "%r is not a JSON number" % value
        elif isinstance(value, (dict, list, tuple)) and id(value) not in seen:
            seen.add(id(value))
            if isinstance(value, dict):
                items = [("%s.%s" % (path, key), item) for key, item in value.items()]
            else:
                items = [("%s[%d]" % (path, index), item) for index, item in enumerate(value)]
            stack.extend(reversed(items))
    return None


def _text(value):
    """``value`` as text the coordinator keeps whole: lone surrogates (say, from an undecodable
    file name) escaped, cut to :data:`MAX_TEXT_BYTES`."""
    if value is None:
        return None
    encoded = str(value).encode("utf-8", "backslashreplace")
    if len(encoded) > MAX_TEXT_BYTES:
        encoded = encoded[:MAX_TEXT_BYTES] + " …[cut]".encode()
    return encoded.decode("utf-8", "ignore")


def _strict_json(result):
    """``result`` as strict JSON in UTF-8: no NaN or Infinity, integers within 64 bits, only text
    that UTF-8 can encode. Raises :class:`UnsendableOutputs` with the reason; only ``outputs`` can
    be at fault (the texts are cleaned and the ids checked beforehand)."""
    try:
        body = json.dumps(result, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        raise UnsendableOutputs(
            "outputs cannot be sent as JSON: text holds %r, which UTF-8 cannot encode (%s)"
            % (error.object[error.start:error.end], error.reason)) from None
    except (TypeError, ValueError, RecursionError) as error:
        found = _first_bad_number(result["outputs"]) if isinstance(error, ValueError) else None
        reason = "%s (at %s)" % (found[1], found[0]) if found else error
        raise UnsendableOutputs("outputs cannot be sent as JSON: %s" % reason) from None
    found = _first_bad_number(result["outputs"])
    if found is not None:
        raise UnsendableOutputs("outputs cannot be sent as JSON: %s (at %s)" % (found[1], found[0]))
    if len(body) > MAX_RESULT_BYTES:
        raise UnsendableOutputs("outputs cannot be sent: the result is %d bytes, more than the %d bytes "
                                "the coordinator accepts" % (len(body), MAX_RESULT_BYTES))
    return body


def encode_result(task_id, job_id, outputs, log_text, error, run_id=None):
    """The body of a stage-result. Outputs that cannot be sent become an ``error`` result with the
    reason, so the job shows it instead of the worker dying or the task timing out. ``run_id``
    (the dispatch's) is echoed, so a late result of an earlier run of the job is told apart."""
    result = {"task_id": task_id, "job_id": job_id, "outputs": outputs,
              "log": _text(log_text), "error": _text(error)}
    if isinstance(run_id, str):
        result["run_id"] = run_id
    try:
        return _strict_json(result)
    except UnsendableOutputs as unsendable:
        log.warning("task %s: %s", task_id, unsendable)
        result.update(outputs=None, error=_text(unsendable))
        return _strict_json(result)


def sendable_text(value):
    """``value`` if it is text a result can carry, else ``None`` (an optional field is dropped
    rather than failing the result)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def describe(error):
    """``str(error)``, even when the exception's ``__str__`` itself fails."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001
        return "(its message could not be turned into text)"
