"""The one wire codec: msgpack, used by every transport so byte counts agree everywhere.

An envelope travels as ``[tag, src, dst, [field, ...]]`` where `tag` is the message type's
position in `MESSAGE_TYPES`; nested dataclasses (entries, commands, positions) become lists of
their fields, enums their values. Decoding checks every field's type against the dataclass
annotations, then the ranges through the message's own `validate()` (building a message does
not check them: see protocols/messages.py), so a malformed or hostile frame raises `DecodeError`
and nothing else.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any

import msgpack

from protocols.errors import DecodeError
from protocols.messages import MESSAGE_TYPES, Envelope, MemberPosition, Message
from protocols.types import Command, Entry

_Decoder = Callable[[Any], Any]
_Encoder = Callable[[Any], Any]

_TAGS: dict[type, int] = {cls: tag for tag, cls in enumerate(MESSAGE_TYPES)}
_NESTED: tuple[type, ...] = (Entry, Command, MemberPosition)


def _scalar_decoder(expected: type) -> _Decoder:
    def decode(value: Any) -> Any:
        # bool is a subclass of int: never accept one for the other.
        if type(value) is not expected and not (expected is float and type(value) is int):
            raise DecodeError(f"expected {expected.__name__}, got {type(value).__name__}")
        return value

    return decode


def _enum_decoder(enum_type: type[Enum]) -> _Decoder:
    def decode(value: Any) -> Any:
        try:
            return enum_type(value)
        except (ValueError, TypeError) as error:
            raise DecodeError(f"bad {enum_type.__name__}: {value!r}") from error

    return decode


def _optional_decoder(inner: _Decoder) -> _Decoder:
    def decode(value: Any) -> Any:
        return None if value is None else inner(value)

    return decode


def _tuple_decoder(inner: _Decoder) -> _Decoder:
    def decode(value: Any) -> Any:
        if type(value) is not list:
            raise DecodeError(f"expected a list, got {type(value).__name__}")
        return tuple(inner(item) for item in value)

    return decode


def _decoder_for(annotation: Any) -> _Decoder:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(arguments) != 1:
            raise TypeError(f"unsupported union {annotation}")
        return _optional_decoder(_decoder_for(arguments[0]))
    if origin is tuple:
        item, ellipsis = typing.get_args(annotation)
        if ellipsis is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, not {annotation}")
        return _tuple_decoder(_decoder_for(item))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return _enum_decoder(annotation)
    if annotation in _NESTED:
        return _dataclass_decoder(annotation)
    if annotation in (int, str, bool, float, bytes):
        return _scalar_decoder(annotation)
    raise TypeError(f"no codec for {annotation!r}")


def _dataclass_decoder(cls: type) -> _Decoder:
    hints = typing.get_type_hints(cls)
    fields = [field.name for field in dataclasses.fields(cls)]
    decoders = [_decoder_for(hints[name]) for name in fields]
    count = len(fields)
    validate: Callable[[Any], None] | None = getattr(cls, "validate", None)

    def decode(value: Any) -> Any:
        if type(value) is not list or len(value) != count:
            raise DecodeError(f"{cls.__name__}: expected {count} fields")
        arguments = [decoder(item) for decoder, item in zip(decoders, value, strict=True)]
        try:
            built = cls(*arguments)
            if validate is not None:
                validate(built)
        except (ValueError, TypeError) as error:
            raise DecodeError(f"{cls.__name__}: {error}") from error
        return built

    return decode


def _identity(value: Any) -> Any:
    return value


def _enum_value(value: Any) -> Any:
    return value.value


def _entry_to_wire(entry: Entry) -> list[Any]:
    c = entry.command
    return [entry.term, entry.index, [c.op.value, c.key, c.value, c.expected, c.client_id, c.seq]]


def _no_entries(value: Any) -> list[Any]:
    return []


def _encoder_for(annotation: Any) -> _Encoder:
    """A converter to wire form, chosen once per field from its annotation."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        convert = _encoder_for(inner)
        if convert is _identity:
            return _identity
        return lambda value: None if value is None else convert(value)
    if origin is tuple:
        item = _encoder_for(typing.get_args(annotation)[0])
        return lambda value: [item(element) for element in value]
    if annotation is Entry:
        return _entry_to_wire
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return _enum_value
    if annotation in _NESTED:
        return _fields_encoder(annotation)
    return _identity


def _fields_encoder(cls: type, entries_left_out: bool = False) -> _Encoder:
    """`cls` to its wire list; `entries_left_out`: its entries field as an empty list."""
    hints = typing.get_type_hints(cls)
    plan = [
        (
            field.name,
            _no_entries
            if entries_left_out and hints[field.name] == tuple[Entry, ...]
            else _encoder_for(hints[field.name]),
        )
        for field in dataclasses.fields(cls)
    ]
    plain = [name for name, convert in plan if convert is _identity]
    if len(plain) == len(plan):  # all scalars: one attrgetter-like pass
        return lambda value: [getattr(value, name) for name in plain]
    return lambda value: [convert(getattr(value, name)) for name, convert in plan]


_DECODERS: list[_Decoder] = [_dataclass_decoder(cls) for cls in MESSAGE_TYPES]
_ENCODERS: dict[type, _Encoder] = {cls: _fields_encoder(cls) for cls in MESSAGE_TYPES}
_decode_node = _scalar_decoder(str)
_ENTRY_FIELDS: dict[type, str] = {
    cls: name
    for cls in MESSAGE_TYPES
    for name, hint in typing.get_type_hints(cls).items()
    if hint == tuple[Entry, ...]
}
_SHELL_ENCODERS: dict[type, _Encoder] = {
    cls: _fields_encoder(cls, entries_left_out=True) for cls in _ENTRY_FIELDS
}


def encode(envelope: Envelope) -> bytes:
    """The envelope as bytes, ready for any transport."""
    return _pack(envelope, _ENCODERS)


def _pack(envelope: Envelope, encoders: dict[type, _Encoder]) -> bytes:
    """The envelope's wire form, its message converted by `encoders` (the full ones, or the
    shells that leave the entries out)."""
    message = envelope.message
    kind = type(message)
    packed: bytes = msgpack.packb(
        [_TAGS[kind], envelope.src, envelope.dst, encoders[kind](message)], use_bin_type=True
    )
    return packed


def decode(frame: bytes) -> Envelope:
    """Bytes from a peer to an envelope; anything malformed raises DecodeError."""
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"not msgpack: {error}") from error
    if type(raw) is not list or len(raw) != 4:
        raise DecodeError("envelope must be [tag, src, dst, body]")
    tag, src, dst, body = raw
    if type(tag) is not int or not 0 <= tag < len(_DECODERS):
        raise DecodeError(f"unknown message tag {tag!r}")
    message: Message = _DECODERS[tag](body)
    return Envelope(_decode_node(src), _decode_node(dst), message)


def encoded_size(envelope: Envelope) -> int:
    """Bytes the envelope occupies on the wire (what the simulator charges to a link)."""
    return len(encode(envelope))


_SHORTEST_KEPT_BATCH = 4  # below it, encoding the batch again costs less than keeping it


class WireSizer:
    """Exactly `encoded_size`, without encoding the same entries again for every copy sent.

    msgpack writes a list as its header followed by its items, so an envelope carrying
    entries is as large as the same envelope with an empty entries list (one byte), plus the
    entries list packed on its own. A leader sends the same batch of entries to each follower
    in turn, so the last batches' sizes are kept. A batch is recognised by the identity of
    every entry in it; the kept batch holds its entries, so no id can be reused meanwhile.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._batches: dict[tuple[int, int], tuple[tuple[Entry, ...], int]] = {}

    def size(self, envelope: Envelope) -> int:
        """Bytes `envelope` occupies on the wire; always equal to `len(encode(envelope))`."""
        message = envelope.message
        kind = type(message)
        field = _ENTRY_FIELDS.get(kind)
        entries: tuple[Entry, ...] = () if field is None else getattr(message, field)
        if len(entries) < _SHORTEST_KEPT_BATCH:
            return encoded_size(envelope)
        shell = _pack(envelope, _SHELL_ENCODERS)
        key = (id(entries[0]), len(entries))
        kept = self._batches.get(key)
        if kept is not None and all(map(operator.is_, kept[0], entries)):
            packed = kept[1]
        else:
            packed = len(msgpack.packb([_entry_to_wire(e) for e in entries], use_bin_type=True))
            if len(self._batches) >= self._capacity:
                self._batches.clear()
            self._batches[key] = (entries, packed)
        return len(shell) - 1 + packed
