"""The anomaly sink: bulk-indexes one document per anomalous Observation.

``_id`` is the reading's key (``bp_core.fhir.ids.reading_key``: subject and Observation
id), so the same input always maps to the same document and a replay overwrites instead
of duplicating; a correction deletes it by the same key. Documents are buffered as they are (typed
structs or dicts) and the whole bulk body is encoded at flush time by one ``msgspec``
call, in C; the response is trimmed with ``filter_path`` to the per-item status and
error: a Python consumer spends its time on (de)serialisation, not on the network.

Per-item outcomes: 2xx is done; 408, 429 and 5xx are transient (retried by the caller,
with the batch); any other 4xx means Elasticsearch refuses the document itself (a
mapping conflict, an id too long): it is handed back as rejected, for the dead-letter
topic. ``refused_for_good`` is that rule, for every caller.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import msgspec

from bp_core.errors import SinkUnavailable

log = logging.getLogger(__name__)


MAX_ID_BYTES = 256  # Elasticsearch refuses ids over 512 bytes; FHIR ids are at most 64 chars
_ENCODER = msgspec.json.Encoder()


def refused_for_good(status: object) -> bool:
    """Whether an HTTP status from Elasticsearch is a refusal that retrying cannot change:
    a 4xx other than 408 (timeout) and 429 (too many requests)."""
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def error_reason(exc: Exception) -> str:
    """Elasticsearch's own one-line reason for a refused request (``error.type: reason``)."""
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("reason"):
        return f"{error.get('type')}: {error['reason']}"
    return f"{type(exc).__name__}: {exc}"


def document_id(observation_id: str) -> str:
    """The ``_id`` of an Observation's document: its id, or a digest when that is too long."""
    # A character is at most 4 UTF-8 bytes: short ids need no encoding to be measured.
    if len(observation_id) <= MAX_ID_BYTES // 4 or len(observation_id.encode()) <= MAX_ID_BYTES:
        return observation_id
    return "sha256-" + hashlib.sha256(observation_id.encode()).hexdigest()


def bulk_body(doc_ids: list[str], documents: list) -> bytes:
    """The NDJSON body of a bulk request indexing each document under its ``_id``
    (a ``None`` document deletes the one under that ``_id``)."""
    operations: list = []
    for doc_id, document in zip(doc_ids, documents):
        if document is None:
            operations.append({"delete": {"_id": doc_id}})
        else:
            operations += ({"index": {"_id": doc_id}}, document)
    return _ENCODER.encode_lines(operations)


@dataclass(frozen=True, slots=True)
class RejectedDocument:
    """A document Elasticsearch refused for good, with what it said."""

    key: object  # the caller's handle on the source message
    reason: str


class ElasticsearchSink:
    """Buffers anomaly documents; ``flush()`` bulk-indexes them idempotently."""

    def __init__(self, es, index: str, *, request_timeout: float = 30.0) -> None:
        self.es = es.options(request_timeout=request_timeout)
        self.index = index
        self._ids: list[str] = []
        self._keys: list[object] = []
        self._documents: list[object] = []
        self._rejected: list[RejectedDocument] = []

    def extend(self, doc_ids: list[str], documents: list, keys: list) -> None:
        """Buffer documents (dicts or ``msgspec.Struct``s) under their ids; ``keys``
        identify their source messages if Elasticsearch refuses them."""
        self._ids += [document_id(doc_id) for doc_id in doc_ids]
        self._keys += keys
        self._documents += documents

    def delete(self, doc_id: str) -> None:
        """Buffer the deletion of a document (after what is buffered before it); deleting
        one that does not exist is no error."""
        self._ids.append(document_id(doc_id))
        self._keys.append(None)
        self._documents.append(None)

    def flush(self) -> list[RejectedDocument]:
        """Index every buffered document; returns those refused for good.

        On success the buffer is empty. On a transient failure the buffer keeps only the
        documents still to write, so retrying ``flush()`` resends nothing twice.

        Raises:
            SinkUnavailable: Elasticsearch is unreachable, or some items failed
                transiently (408, 429, 5xx); call ``flush()`` again later.
        """
        if not self._ids:
            return self._take_rejected()
        try:
            response = self.es.bulk(
                index=self.index,
                operations=bulk_body(self._ids, self._documents),
                filter_path="errors,items.*.status,items.*.error.type,items.*.error.reason",
            )
        except Exception as exc:  # the client raises many transport/API types; all mean "not written"
            if getattr(exc, "status_code", None) == 400:
                # The request as a whole was refused (one bad line spoils the lot):
                # find the culprits one document at a time.
                return self._flush_one_by_one()
            raise SinkUnavailable(f"Elasticsearch bulk request failed: {type(exc).__name__}: {exc}") from exc
        if not response.get("errors"):
            self._ids, self._keys, self._documents = [], [], []
            return self._take_rejected()
        rejected = self._rejected
        retry = []
        for i, item in enumerate(response["items"]):
            outcome = next(iter(item.values()))
            status = outcome.get("status", 500)
            if status < 300 or (status == 404 and self._documents[i] is None):
                continue  # written, or deleted (or already gone)
            if not refused_for_good(status):
                retry.append(i)
            else:
                error = outcome.get("error") or {}
                rejected.append(RejectedDocument(self._keys[i], f"elasticsearch refused document {self._ids[i]}: {error.get('type')}: {error.get('reason')}"))
        self._ids = [self._ids[i] for i in retry]
        self._keys = [self._keys[i] for i in retry]
        self._documents = [self._documents[i] for i in retry]
        if retry:
            raise SinkUnavailable(f"Elasticsearch could not index {len(retry)} documents for now (408/429/5xx)")
        return self._take_rejected()

    def _flush_one_by_one(self) -> list[RejectedDocument]:
        ids, keys, documents = self._ids, self._keys, self._documents
        self._ids, self._keys, self._documents = [], [], []
        for i, doc_id in enumerate(ids):
            try:
                if documents[i] is None:
                    self.es.options(ignore_status=404).delete(index=self.index, id=doc_id)
                else:
                    self.es.index(index=self.index, id=doc_id, document=msgspec.to_builtins(documents[i]))
            except Exception as exc:
                if refused_for_good(getattr(exc, "status_code", None)):
                    self._rejected.append(RejectedDocument(keys[i], f"elasticsearch refused document {doc_id}: {error_reason(exc)}"))
                    continue
                self._ids, self._keys, self._documents = ids[i:], keys[i:], documents[i:]
                raise SinkUnavailable(f"Elasticsearch indexing failed: {type(exc).__name__}: {exc}") from exc
        return self._take_rejected()

    def _take_rejected(self) -> list[RejectedDocument]:
        rejected, self._rejected = self._rejected, []
        return rejected
