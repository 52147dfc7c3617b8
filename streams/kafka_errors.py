"""Which Kafka errors are permanent: retrying them can never succeed, so the worker must
not hold and retry them as it does while a broker is down.

librdkafka flags only some errors (``fatal()``, ``retriable()``); the errors of delivery
reports and of most calls carry just a code (both flags False), so the code decides. A
timeout, a lost connection or a leader election is transient; a record over a size limit,
an invalid record, a refused authorization or a fatal producer is not. A code not listed
counts as transient (a corrupt-message CRC error, say, is usually the network's), so an
unforeseen error holds the worker with a log line every minute rather than stopping one
that would have recovered.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

_K = KafkaError
PERMANENT_CODES: frozenset[int] = frozenset(
    {
        _K.MSG_SIZE_TOO_LARGE,  # over the topic's max.message.bytes, or the client's
        _K.INVALID_MSG_SIZE,
        _K.RECORD_LIST_TOO_LARGE,
        _K.INVALID_RECORD,
        _K.INVALID_TIMESTAMP,
        _K.INVALID_REQUIRED_ACKS,
        _K.TOPIC_EXCEPTION,  # an invalid topic name
        _K.INVALID_CONFIG,
        _K.POLICY_VIOLATION,
        _K.UNSUPPORTED_VERSION,
        _K.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        _K.UNSUPPORTED_COMPRESSION_TYPE,
        _K.TOPIC_AUTHORIZATION_FAILED,
        _K.GROUP_AUTHORIZATION_FAILED,
        _K.CLUSTER_AUTHORIZATION_FAILED,
        _K.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        _K.SASL_AUTHENTICATION_FAILED,
        _K._AUTHENTICATION,
        _K._INVALID_ARG,
        _K._INVALID_TYPE,
        _K._BAD_MSG,
        _K._FATAL,
    }
)
SIZE_CODES: frozenset[int] = frozenset(
    {_K.MSG_SIZE_TOO_LARGE, _K.INVALID_MSG_SIZE, _K.RECORD_LIST_TOO_LARGE}
)


def is_permanent(err: KafkaError) -> bool:
    """True for an error no retry can fix (see the module docstring)."""
    if err.fatal():
        return True
    if err.retriable():
        return False
    return err.code() in PERMANENT_CODES


def permanent_cause(err: BaseException | None) -> KafkaError | None:
    """The permanent Kafka error behind ``err`` (itself, or along its causes), if any."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, KafkaException) and err.args and isinstance(err.args[0], KafkaError):
            return err.args[0] if is_permanent(err.args[0]) else None
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None
