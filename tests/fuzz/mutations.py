"""A deterministic mutation fuzzer for FHIR payloads (standard library + orjson only).

``Mutator(seed)`` turns seed documents (real published examples, builder outputs) into
mutated payloads: JSON-level mutations on the decoded tree (delete / duplicate / swap
keys, change a value's type, huge numbers, unicode, very long strings, deep nesting)
and byte-level mutations on the encoded text (truncate, flip, splice, NaN/Infinity
literals, stray BOMs, invalid UTF-8, NDJSON concatenation). The same seed always
gives the same sequence, so a failure is reproducible from (seed, index).
"""

from __future__ import annotations

import random
from typing import Iterator

import orjson

UNICODE = ["\u0000", "\u2028", "\u2029", "\ufeff", "\u202e", "é", "Ω", "漢字", "🩺", "\U0010ffff",
           "\\", '"', "\n", "\t", "../", "Patient/", "urn:uuid:", "%00", "\u00a0", "\u0301"]
HUGE = [10**18, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, -1e308, 5e-324, -0.0, 1e-300, 0, -1,
]  # (beyond-u64 integers are injected as raw literals: LITERALS)
LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"0x10", b"+1", b"01",
            b"1.", b".5", b"1e", b"true", b"null", b'"120"', b"[]", b"{}", b"99999999999999999999999"]
FHIR_KEYS = ["resourceType", "id", "status", "code", "coding", "system", "component", "valueQuantity",
             "value", "unit", "subject", "reference", "identifier", "effectiveDateTime",
             "effectiveInstant", "effectivePeriod", "start", "end", "entry", "resource", "type",
             "dataAbsentReason", "device", "display", "fullUrl"]


class Mutator:
    """Mutates seed documents; ``payloads(n)`` yields n mutated byte strings."""

    def __init__(self, seeds: list[object], seed: int = 0) -> None:
        self.seeds = seeds
        self.rng = random.Random(seed)
        self.json_ops = [self.delete_key, self.duplicate_key, self.swap_keys, self.change_type,
                         self.huge_number, self.inject_unicode, self.long_string, self.deep_nesting,
                         self.rename_key, self.shuffle_list, self.replace_with_seed_part]
        self.byte_ops = [self.truncate, self.flip_bytes, self.splice, self.number_literal, self.insert_bom,
                         self.invalid_utf8, self.ndjson, self.delete_span, self.duplicate_span]

    # ------------------------------------------------------------------ driver

    def payloads(self, count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield self.one()

    def one(self) -> bytes:
        rng = self.rng
        document = orjson.loads(orjson.dumps(rng.choice(self.seeds)))  # deep copy
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            try:
                document = rng.choice(self.json_ops)(document)
            except (TypeError, orjson.JSONEncodeError):  # orjson cannot encode it (nesting > 255): skip
                continue
        payload = self.encode(document)
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            payload = rng.choice(self.byte_ops)(payload)
        return payload

    def encode(self, document) -> bytes:
        if isinstance(document, _Raw):
            return document.text
        try:
            return orjson.dumps(document, option=self.rng.choice((0, orjson.OPT_INDENT_2)))
        except (TypeError, orjson.JSONEncodeError):  # nesting beyond orjson's limit
            return repr(document).encode()

    # ------------------------------------------------------------------ tree helpers

    def containers(self, node, depth=0):
        """Every dict and list of the tree (bounded depth)."""
        if isinstance(node, (dict, list)) and depth < 60:
            yield node
            for child in (node.values() if isinstance(node, dict) else node):
                yield from self.containers(child, depth + 1)

    def pick_dict(self, document):
        dicts = [c for c in self.containers(document) if isinstance(c, dict) and c]
        return self.rng.choice(dicts) if dicts else None

    def random_value(self, depth=0):
        rng = self.rng
        kind = rng.randrange(9 if depth < 3 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice((True, False))
        if kind == 2:
            return rng.choice(HUGE + [rng.randint(-400, 400), round(rng.uniform(-400, 400), 3)])
        if kind == 3:
            return "".join(rng.choice(UNICODE) for _ in range(rng.randrange(1, 6)))
        if kind == 4:
            return rng.choice(FHIR_KEYS + ["8480-6", "8462-4", "85354-9", "http://loinc.org", "mm[Hg]", "kPa",
                                           "final", "entered-in-error", "2026-03-01", "2026-13-45T99:99:99Z",
                                           "Patient/x", "Device/x", "https://h/Observation/x"])
        if kind == 5:
            return ""
        if kind == 6:
            return [self.random_value(depth + 1) for _ in range(rng.randrange(4))]
        if kind == 7:
            return {rng.choice(FHIR_KEYS): self.random_value(depth + 1) for _ in range(rng.randrange(4))}
        return {}

    # ------------------------------------------------------------------ JSON-level

    def delete_key(self, document):
        target = self.pick_dict(document)
        if target:
            del target[self.rng.choice(list(target))]
        return document

    def duplicate_key(self, document):
        """A JSON object with the same key twice (legal JSON text; last one wins)."""
        target = self.pick_dict(document)
        if not target:
            return document
        key = self.rng.choice(list(target))
        marker = "@@dup@@"
        target[marker] = self.random_value()
        text = orjson.dumps(document)
        return _Raw(text.replace(orjson.dumps(marker), orjson.dumps(key), 1))

    def swap_keys(self, document):
        target = self.pick_dict(document)
        if target and len(target) >= 2:
            a, b = self.rng.sample(list(target), 2)
            target[a], target[b] = target[b], target[a]
        return document

    def rename_key(self, document):
        target = self.pick_dict(document)
        if target:
            key = self.rng.choice(list(target))
            target[self.rng.choice(FHIR_KEYS + [key.upper(), key + " ", ""])] = target.pop(key)
        return document

    def change_type(self, document):
        target = self.pick_dict(document)
        if target:
            target[self.rng.choice(list(target))] = self.random_value()
        elif isinstance(document, list) and document:
            document[self.rng.randrange(len(document))] = self.random_value()
        return document

    def huge_number(self, document):
        target = self.pick_dict(document)
        if target:
            numeric = [k for k, v in target.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            key = self.rng.choice(numeric or list(target))
            target[key] = self.rng.choice(HUGE)
        return document

    def inject_unicode(self, document):
        target = self.pick_dict(document)
        if target:
            key = self.rng.choice(list(target))
            value = target[key]
            noise = "".join(self.rng.choice(UNICODE) for _ in range(self.rng.randrange(1, 4)))
            target[key] = (value + noise if self.rng.random() < 0.5 else noise + value) if isinstance(value, str) else noise
        return document

    def long_string(self, document):
        target = self.pick_dict(document)
        if target:
            target[self.rng.choice(list(target))] = self.rng.choice("aZ9/é🩺") * self.rng.choice((300, 5000, 100_000))
        return document

    def deep_nesting(self, document):
        depth = self.rng.choice((10, 200, 1000, 1100, 5000))
        target = self.pick_dict(document)
        if not target:
            return document
        key = self.rng.choice(list(target))
        if depth > 500:  # beyond orjson's own limit: build the text directly
            opener, closer = (b"[" * depth, b"]" * depth) if self.rng.random() < 0.5 else \
                (b'{"a":' * depth, b"}" * depth)
            marker = "@@deep@@"
            target[key] = marker
            return _Raw(orjson.dumps(document).replace(orjson.dumps(marker), opener + b"1" + closer, 1))
        value = target[key]
        for _ in range(depth):
            value = [value] if self.rng.random() < 0.5 else {"value": value}
        target[key] = value
        return document

    def shuffle_list(self, document):
        lists = [c for c in self.containers(document) if isinstance(c, list) and len(c) > 1]
        if lists:
            self.rng.shuffle(self.rng.choice(lists))
        return document

    def replace_with_seed_part(self, document):
        """Graft a subtree of another seed (a component into a coding, a Bundle into an entry...)."""
        donor = orjson.loads(orjson.dumps(self.rng.choice(self.seeds)))
        parts = list(self.containers(donor))
        target = self.pick_dict(document)
        if target and parts:
            target[self.rng.choice(list(target))] = self.rng.choice(parts)
        return document

    # ------------------------------------------------------------------ byte-level

    def truncate(self, payload: bytes) -> bytes:
        return payload[:self.rng.randrange(len(payload) + 1)]

    def flip_bytes(self, payload: bytes) -> bytes:
        data = bytearray(payload)
        for _ in range(self.rng.randrange(1, 4)):
            if data:
                data[self.rng.randrange(len(data))] = self.rng.randrange(256)
        return bytes(data)

    def splice(self, payload: bytes) -> bytes:
        other = orjson.dumps(self.rng.choice(self.seeds))
        cut_a, cut_b = self.rng.randrange(len(payload) + 1), self.rng.randrange(len(other) + 1)
        return payload[:cut_a] + other[cut_b:]

    def number_literal(self, payload: bytes) -> bytes:
        """Replace a number token with NaN / Infinity / 1e999 / other non-JSON literals."""
        digits = [i for i, byte in enumerate(payload) if 48 <= byte <= 57 and (i == 0 or not 48 <= payload[i - 1] <= 57)]
        if not digits:
            return payload + self.rng.choice(LITERALS)
        start = self.rng.choice(digits)
        end = start
        while end < len(payload) and payload[end:end + 1] in (b"0123456789.eE+-"[i:i + 1] for i in range(15)):
            end += 1
        return payload[:start] + self.rng.choice(LITERALS) + payload[end:]

    def insert_bom(self, payload: bytes) -> bytes:
        return self.rng.choice((b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xfe\xff", b" \n")) + payload

    def invalid_utf8(self, payload: bytes) -> bytes:
        at = self.rng.randrange(len(payload) + 1)
        return payload[:at] + self.rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00")) + payload[at:]

    def ndjson(self, payload: bytes) -> bytes:
        others = [orjson.dumps(self.rng.choice(self.seeds)) for _ in range(self.rng.randrange(1, 4))]
        lines = [payload.replace(b"\n", b" ")] + others
        self.rng.shuffle(lines)
        return self.rng.choice((b"\n", b"\r\n", b"\n\n")).join(lines)

    def delete_span(self, payload: bytes) -> bytes:
        a, b = sorted(self.rng.randrange(len(payload) + 1) for _ in range(2))
        return payload[:a] + payload[b:]

    def duplicate_span(self, payload: bytes) -> bytes:
        a, b = sorted(self.rng.randrange(len(payload) + 1) for _ in range(2))
        return payload[:b] + payload[a:b] + payload[b:]


class _Raw:
    """Encoded text a JSON-level mutation produced directly (duplicate keys, deep nesting)."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __iter__(self):  # lets later JSON-level ops treat it as an opaque leaf
        return iter(())
