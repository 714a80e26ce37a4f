"""The protocol-buffer wire format, by hand: enough to read and write SentencePiece's ``.model``.

A serialized protocol buffer is a flat run of *fields*. Each field starts with
a varint key, ``field_number << 3 | wire_type``, followed by its value:

    wire type 0  varint            ints, bools, enums: 7 bits a byte, low bits
                                   first, the top bit says "more bytes follow"
    wire type 1  fixed64           8 bytes, little-endian (double, fixed64)
    wire type 2  length-delimited  a varint length, then that many bytes:
                                   strings, bytes, and nested messages
    wire type 5  fixed32           4 bytes, little-endian (float, fixed32)

    300 as a varint:  0b1_0101100 0b0_0000010  ->  0xAC 0x02
    field 1, a string "hi":  key (1 << 3 | 2) = 0x0A, length 0x02, b"hi"

A negative int32 is written as the 64-bit two's complement, so -1 takes ten
bytes (0xFF x 9, 0x01). Nothing in the bytes says what a field *means*: a
*schema* (below, ``Message``) names each field number and gives its type.

``decode(data, schema)`` returns a dict {field name: value} holding only the
fields present in the data (proto2 keeps presence, so an absent field reads as
its default and is not written back); repeated fields are lists; a nested
message is a dict again. Fields the schema does not know are kept, raw, under
``"_unknown"``, and ``encode(message, schema)`` writes them back after the
known fields, which it writes in field-number order, as the C++ library does:
a file the C++ library wrote comes back byte for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Union

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

# the wire type each scalar kind is written with
_WIRE_TYPE = {"int32": VARINT, "int64": VARINT, "uint64": VARINT, "bool": VARINT,
              "enum": VARINT, "float": FIXED32, "double": FIXED64,
              "string": LENGTH_DELIMITED, "bytes": LENGTH_DELIMITED}


class ProtobufError(ValueError):
    """Bytes that are not a valid protocol buffer of the expected schema."""


@dataclass(frozen=True)
class Field:
    """One field of a message schema: its name, its kind (a scalar kind from
    _WIRE_TYPE, or a nested Message) and whether it repeats."""
    name: str
    kind: Union[str, "Message"]
    repeated: bool = False


@dataclass
class Message:
    """A message schema: field number -> Field, and the defaults of absent fields."""
    name: str
    fields: dict[int, Field]
    defaults: dict = field(default_factory=dict)

    def number_of(self, name: str) -> int:
        for number, f in self.fields.items():
            if f.name == name:
                return number
        raise KeyError(f"{self.name} has no field {name!r}")


# ------------------------------------------------------------------ varints

def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint starting at data[pos], and the position after it.

    Each byte gives 7 bits, least significant group first; a set top bit
    (0x80) means another byte follows. At most 10 bytes (64 bits).
    """
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtobufError(f"a varint runs past the end of the data (at byte {pos})")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError(f"a varint is longer than 10 bytes (ending at byte {pos})")


def write_varint(value: int) -> bytes:
    """value as a varint; a negative value as its 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# --------------------------------------------------------------- raw fields

def iter_fields(data: bytes):
    """Yield (field_number, wire_type, value, raw) for each field of a message.

    value: an int (varint), 8 or 4 raw bytes (fixed64, fixed32) or the bytes of
    a length-delimited field; raw: the whole field, key included, as it was
    written (kept for fields a schema does not know).
    """
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"field number 0 at byte {start} (no valid message has it)")
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == FIXED64:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == FIXED32:
            value, pos = data[pos:pos + 4], pos + 4
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        else:
            raise ProtobufError(f"field {number} at byte {start} has wire type {wire_type}, "
                                "which no current protocol buffer uses (groups, or not a "
                                "protocol buffer at all)")
        if pos > len(data):
            raise ProtobufError(f"field {number} at byte {start} runs past the end of the data "
                                f"({len(data)} bytes): the data is cut short")
        yield number, wire_type, value, data[start:pos]


# ---------------------------------------------------------- decode / encode

def _decode_scalar(kind: str, value, number: int, path: str):
    if kind in ("int32", "int64"):
        return value - (1 << 64) if value >= 1 << 63 else value   # two's complement
    if kind in ("uint64", "enum"):
        return value
    if kind == "bool":
        return value != 0
    if kind == "float":
        return struct.unpack("<f", value)[0]
    if kind == "double":
        return struct.unpack("<d", value)[0]
    if kind == "bytes":
        return bytes(value)
    if kind == "string":
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ProtobufError(f"{path} (field {number}) is not valid UTF-8: {error}") from None
    raise AssertionError(kind)


def decode(data: bytes, schema: Message, path: str | None = None) -> dict:
    """The fields of a serialized message, as a dict (see the module docstring)."""
    path = path or schema.name
    message: dict = {}
    for number, wire_type, value, raw in iter_fields(data):
        f = schema.fields.get(number)
        if f is None:
            message.setdefault("_unknown", []).append(raw)
            continue
        where = f"{path}.{f.name}"
        expected = LENGTH_DELIMITED if isinstance(f.kind, Message) else _WIRE_TYPE[f.kind]
        if wire_type != expected:
            raise ProtobufError(f"{where} (field {number}) has wire type {wire_type}; "
                                f"expected {expected}")
        if isinstance(f.kind, Message):
            item = decode(value, f.kind, where)
        else:
            item = _decode_scalar(f.kind, value, number, where)
        if f.repeated:
            message.setdefault(f.name, []).append(item)
        else:
            message[f.name] = item               # the last one wins, as in protobuf
    return message


def _encode_scalar(kind: str, value) -> bytes:
    if kind in ("int32", "int64", "uint64", "enum"):
        return write_varint(int(value))
    if kind == "bool":
        return write_varint(1 if value else 0)
    if kind == "float":
        return struct.pack("<f", value)
    if kind == "double":
        return struct.pack("<d", value)
    payload = value.encode("utf-8") if kind == "string" else bytes(value)
    return write_varint(len(payload)) + payload


def encode(message: dict, schema: Message) -> bytes:
    """Serialize a dict of the kind decode returns: known fields in field-number
    order, then the unknown ones as they were read."""
    out = bytearray()
    names = {f.name for f in schema.fields.values()}
    stray = set(message) - names - {"_unknown"}
    if stray:
        raise KeyError(f"encode: {schema.name} has no field(s) {sorted(stray)}")
    for number in sorted(schema.fields):
        f = schema.fields[number]
        if f.name not in message:
            continue
        values = message[f.name] if f.repeated else [message[f.name]]
        for value in values:
            if isinstance(f.kind, Message):
                payload = encode(value, f.kind)
                out += write_varint(number << 3 | LENGTH_DELIMITED)
                out += write_varint(len(payload)) + payload
            else:
                out += write_varint(number << 3 | _WIRE_TYPE[f.kind])
                out += _encode_scalar(f.kind, value)
    for raw in message.get("_unknown", []):
        out += raw
    return bytes(out)


def get(message: dict, name: str, schema: Message):
    """A field's value, or its schema default when the field is absent."""
    if name in message:
        return message[name]
    number = schema.number_of(name)
    if schema.fields[number].repeated:
        return []
    return schema.defaults.get(name)
