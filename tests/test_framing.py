"""The peer wire format in memory: handshake, sealed frames, batches, the frame decoder."""

from __future__ import annotations

import pytest

from cluster.framing import (
    NONCE_BYTES,
    AcceptorHandshake,
    AuthError,
    DialerHandshake,
    FrameDecoder,
    FrameKind,
    FramingError,
    HandshakeError,
    RawFrame,
    Session,
    pack_batch,
    pack_frame,
    unpack_batch,
)

SECRET = b"cluster-secret-for-framing-tests"


def only_frame(data: bytes) -> RawFrame:
    (frame,) = FrameDecoder(1 << 20).feed(data)
    return frame


def handshake(
    dialer_secret: bytes = SECRET,
    acceptor_secret: bytes = SECRET,
    dialer_nonce: bytes = b"d" * NONCE_BYTES,
    acceptor_nonce: bytes = b"a" * NONCE_BYTES,
) -> tuple[Session, Session]:
    dialer = DialerHandshake(dialer_secret, "n1", "n2", dialer_nonce)
    acceptor = AcceptorHandshake(acceptor_secret, "n2", acceptor_nonce)
    challenge = acceptor.on_hello(only_frame(dialer.hello()))
    auth = dialer.on_challenge(only_frame(challenge))
    acceptor_session, welcome = acceptor.on_auth(only_frame(auth))
    return dialer.on_welcome(only_frame(welcome)), acceptor_session


def test_handshake_names_both_ends_and_agrees_on_keys() -> None:
    dialer, acceptor = handshake()
    assert (dialer.peer, acceptor.peer) == ("n2", "n1")
    frame = only_frame(dialer.sealer.seal(FrameKind.DATA, b"hello"))
    assert acceptor.opener.open(frame) == b"hello"
    back = only_frame(acceptor.sealer.seal(FrameKind.PONG, b"12345678"))
    assert dialer.opener.open(back) == b"12345678"


def test_dialer_refuses_an_acceptor_without_the_secret() -> None:
    with pytest.raises(AuthError):
        handshake(acceptor_secret=b"some-other-secret-value")


def test_acceptor_refuses_a_dialer_without_the_secret() -> None:
    dialer = DialerHandshake(SECRET, "n1", "n2", b"d" * NONCE_BYTES)
    acceptor = AcceptorHandshake(SECRET, "n2", b"a" * NONCE_BYTES)
    acceptor.on_hello(only_frame(dialer.hello()))
    # A dialer that cannot compute the proof can only send something else of the right shape.
    forged = pack_frame(FrameKind.AUTH, b"\x91\xc4\x20" + bytes(32))
    with pytest.raises(AuthError):
        acceptor.on_auth(only_frame(forged))


def test_a_recorded_auth_does_not_open_a_new_connection() -> None:
    dialer = DialerHandshake(SECRET, "n1", "n2", b"d" * NONCE_BYTES)
    first = AcceptorHandshake(SECRET, "n2", b"a" * NONCE_BYTES)
    auth = dialer.on_challenge(only_frame(first.on_hello(only_frame(dialer.hello()))))
    second = AcceptorHandshake(SECRET, "n2", b"b" * NONCE_BYTES)  # fresh acceptor nonce
    second.on_hello(only_frame(dialer.hello()))
    with pytest.raises(AuthError):
        second.on_auth(only_frame(auth))


def test_hello_for_another_node_or_protocol_is_refused() -> None:
    dialer = DialerHandshake(SECRET, "n1", "n3", b"d" * NONCE_BYTES)
    with pytest.raises(HandshakeError):
        AcceptorHandshake(SECRET, "n2", b"a" * NONCE_BYTES).on_hello(only_frame(dialer.hello()))
    garbage_hello = pack_frame(FrameKind.HELLO, b"\x93\x01\x02\x03")
    with pytest.raises(HandshakeError):
        AcceptorHandshake(SECRET, "n2", b"a" * NONCE_BYTES).on_hello(only_frame(garbage_hello))
    not_msgpack = pack_frame(FrameKind.HELLO, b"\xc1")
    with pytest.raises(HandshakeError):
        AcceptorHandshake(SECRET, "n2", b"a" * NONCE_BYTES).on_hello(only_frame(not_msgpack))


def test_forged_frame_is_refused_and_does_not_break_the_stream() -> None:
    dialer, acceptor = handshake()
    genuine = dialer.sealer.seal(FrameKind.DATA, b"one")
    tampered = bytearray(genuine)
    tampered[5] ^= 0x01  # first payload byte, after length and kind
    with pytest.raises(AuthError):
        acceptor.opener.open(only_frame(bytes(tampered)))
    assert acceptor.opener.open(only_frame(genuine)) == b"one"


def test_replayed_reflected_and_spliced_frames_are_refused() -> None:
    dialer, acceptor = handshake()
    first = dialer.sealer.seal(FrameKind.DATA, b"one")
    assert acceptor.opener.open(only_frame(first)) == b"one"
    with pytest.raises(AuthError):  # replay: the sequence number moved on
        acceptor.opener.open(only_frame(first))
    with pytest.raises(AuthError):  # reflection: the other direction has another key
        dialer.opener.open(only_frame(dialer.sealer.seal(FrameKind.PONG, b"x" * 8)))
    other_dialer, other_acceptor = handshake(dialer_nonce=b"e" * NONCE_BYTES)
    with pytest.raises(AuthError):  # splice from another connection
        other_acceptor.opener.open(only_frame(dialer.sealer.seal(FrameKind.DATA, b"two")))
    assert other_acceptor.opener.open(only_frame(other_dialer.sealer.seal(FrameKind.DATA, b"3")))


def test_handshake_frames_are_not_accepted_as_sealed_frames() -> None:
    _, acceptor = handshake()
    with pytest.raises(AuthError):
        acceptor.opener.open(RawFrame(FrameKind.HELLO, bytes(40)))
    with pytest.raises(AuthError):
        acceptor.opener.open(RawFrame(FrameKind.DATA, b"short"))


def test_decoder_reassembles_frames_split_anywhere() -> None:
    stream = pack_frame(FrameKind.PING, b"12345678") + pack_frame(FrameKind.DATA, b"x" * 300)
    decoder = FrameDecoder(1024)
    frames = [frame for byte in stream for frame in decoder.feed(bytes([byte]))]
    assert frames == [RawFrame(FrameKind.PING, b"12345678"), RawFrame(FrameKind.DATA, b"x" * 300)]
    assert decoder.buffered == 0


def test_decoder_refuses_oversized_empty_and_unknown_frames() -> None:
    with pytest.raises(FramingError):
        FrameDecoder(100).feed(pack_frame(FrameKind.DATA, bytes(101)))
    with pytest.raises(FramingError):
        FrameDecoder(100).feed(b"\x00\x00\x00\x00\x01")
    with pytest.raises(FramingError):
        FrameDecoder(100).feed(b"\x00\x00\x00\x01\x63")


def test_batch_round_trip_and_truncation() -> None:
    items = [b"", b"a", b"bc" * 100]
    assert unpack_batch(pack_batch(items)) == items
    packed = pack_batch(items)
    with pytest.raises(FramingError):
        unpack_batch(packed[:-1])
    with pytest.raises(FramingError):
        unpack_batch(b"\x00\x00")
