"""HTTP/2 conformance (RFC 9113 MUSTs) at the frame level, with the Python `h2` package.

Each case speaks h2c with prior knowledge to the plaintext listener (the proxy tells HTTP/2 from
HTTP/1.1 by the connection preface) and checks the answer RFC 9113 requires, the way h2spec
judges it:
  - a connection error is a GOAWAY with one of the allowed codes, or the connection closing;
  - a stream error is an RST_STREAM (or a GOAWAY) with one of the allowed codes, or a close.

Target: the real binary (fixtures `proxy` + `upstream`, deploy/demo/upstream.py behind it), or,
to check the harness itself, any h2c server named by H2_TARGET=host:port (e.g. nghttpd, or a
stand-in driving the HTTP2 module). Needs `pip install h2`.
"""

import os
import socket
import struct
import time

import pytest

h2 = pytest.importorskip("h2", reason="pip install h2")  # the Makefile installs it
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import hpack  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes (RFC 9113 §7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)

# SETTINGS identifiers.
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, \
    S_MAX_HEADER_LIST_SIZE = range(1, 7)

TIMEOUT = 5.0


def frame(ftype, flags, stream, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBL", n >> 16, n & 0xFFFF, ftype, flags, stream & 0x7FFFFFFF) + payload


def settings_frame(entries=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HL", k, v) for k, v in entries))


class Frame:
    def __init__(self, ftype, flags, stream, payload):
        self.type, self.flags, self.stream, self.payload = ftype, flags, stream, payload

    @property
    def error_code(self):
        if self.type == RST_STREAM and len(self.payload) >= 4:
            return struct.unpack(">L", self.payload[:4])[0]
        if self.type == GOAWAY and len(self.payload) >= 8:
            return struct.unpack(">L", self.payload[4:8])[0]
        return None

    def __repr__(self):
        names = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
                 "WINDOW_UPDATE", "CONTINUATION"]
        name = names[self.type] if self.type < len(names) else "type%d" % self.type
        return "%s(flags=0x%x, stream=%d, len=%d, code=%s)" % (name, self.flags, self.stream, len(self.payload),
                                                               self.error_code)


class Closed(Exception):
    pass


class H2Raw:
    """A raw HTTP/2 client: writes any bytes, reads frames, decodes header blocks with hpack."""

    def __init__(self, addr, timeout=TIMEOUT):
        host, port = addr
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server_settings = {}
        self.authority = "%s:%d" % (host, port)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the server may already have closed; the reader reports it

    def read_frame(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                n = (self.buf[0] << 16) | (self.buf[1] << 8) | self.buf[2]
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    stream = struct.unpack(">L", self.buf[5:9])[0] & 0x7FFFFFFF
                    payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
                    return Frame(ftype, flags, stream, payload)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame within %.1fs" % timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame within %.1fs" % timeout)
            except OSError as e:  # ECONNRESET after the server's close
                raise Closed(repr(e))
            if not data:
                raise Closed("EOF")
            self.buf += data

    def handshake(self, settings=()):
        """Preface + SETTINGS; waits for the server's SETTINGS and the ACK of ours, acks theirs."""
        self.send(PREFACE + settings_frame(settings))
        got_settings = got_ack = False
        while not (got_settings and got_ack):
            f = self.read_frame()
            if f.type == SETTINGS and f.flags & ACK:
                got_ack = True
            elif f.type == SETTINGS:
                for i in range(0, len(f.payload) - 5, 6):
                    k, v = struct.unpack(">HL", f.payload[i:i + 6])
                    self.server_settings[k] = v
                self.send(settings_frame(ack=True))
                got_settings = True
            elif f.type == GOAWAY:
                raise AssertionError("GOAWAY during handshake: %r" % f)

    def header_block(self, fields):
        return self.encoder.encode(fields)

    def request_fields(self, method="GET", path="/", extra=()):
        return [(":method", method), (":scheme", "http"), (":path", path), (":authority", self.authority)] + list(extra)

    def headers(self, stream, fields, end_stream=True, end_headers=True, raw_block=None):
        block = raw_block if raw_block is not None else self.header_block(fields)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, stream, block)

    def decode(self, f):
        return [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                for k, v in self.decoder.decode(f.payload)]

    def response(self, stream, timeout=TIMEOUT):
        """Reads until `stream` ends: (headers, body, trailers). Acks PINGs, decodes all HEADERS."""
        heads, body, trailers = None, b"", None
        while True:
            f = self.read_frame(timeout)
            if f.type == HEADERS:
                fields = self.decode(f)
                if f.stream != stream:
                    continue
                if heads is None or dict(heads).get(":status", "200").startswith("1"):
                    heads = fields
                else:
                    trailers = fields
            elif f.type == DATA and f.stream == stream:
                body += f.payload
            elif f.type in (RST_STREAM, GOAWAY) and (f.type == GOAWAY or f.stream == stream):
                raise AssertionError("stream %d ended with %r" % (stream, f))
            if f.stream == stream and f.type in (HEADERS, DATA) and f.flags & END_STREAM:
                return heads, body, trailers

    # --- h2spec-style verdicts -----------------------------------------------------------

    def expect_connection_error(self, *codes, timeout=TIMEOUT):
        """A GOAWAY with one of `codes`, or the connection closing."""
        seen = []
        while True:
            try:
                f = self.read_frame(timeout)
            except Closed:
                return
            except TimeoutError:
                raise AssertionError("expected GOAWAY %s or close; got %s" % (codes, seen[-8:]))
            seen.append(f)
            if f.type == GOAWAY:
                assert f.error_code in codes, "GOAWAY %r, wanted %s" % (f, codes)
                return

    def expect_stream_error(self, stream, *codes, timeout=TIMEOUT, served_ok=False):
        """RST_STREAM on `stream` (or GOAWAY) with one of `codes`, or the connection closing.
        `served_ok`: the stream may complete first (the frame raced the response, as h2spec allows)."""
        seen = []
        while True:
            try:
                f = self.read_frame(timeout)
            except Closed:
                return
            except TimeoutError:
                raise AssertionError("expected RST_STREAM/GOAWAY %s; got %s" % (codes, seen[-8:]))
            seen.append(f)
            if f.type == HEADERS:
                self.decode(f)  # keep the HPACK state in step
            if f.type == GOAWAY or (f.type == RST_STREAM and f.stream == stream):
                assert f.error_code in codes, "%r, wanted %s" % (f, codes)
                return
            if f.type in (HEADERS, DATA) and f.stream == stream and f.flags & END_STREAM and not served_ok:
                raise AssertionError("stream %d was served (%r), wanted an error %s" % (stream, f, codes))

    def expect_alive(self):
        """The connection still works: a PING gets its ACK, with no GOAWAY before it."""
        payload = b"alive!!!"
        self.send(frame(PING, 0, 0, payload))
        while True:
            f = self.read_frame()
            if f.type == HEADERS:
                self.decode(f)
            assert f.type != GOAWAY, "unexpected %r" % f
            if f.type == PING and f.flags & ACK and f.payload == payload:
                return


def hpack_int(value, prefix):
    maxp = (1 << prefix) - 1
    if value < maxp:
        return bytes([value])
    out, value = [maxp], value - maxp
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name, value):
    """Literal header field without indexing, new name (RFC 7541 §6.2.2): any bytes allowed."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


# --- target ------------------------------------------------------------------------------------

@pytest.fixture
def h2addr(request):
    target = os.environ.get("H2_TARGET")
    if target:
        host, port = target.rsplit(":", 1)
        return host, int(port)
    upstream = request.getfixturevalue("upstream")
    proxy = request.getfixturevalue("proxy")
    p = proxy(upstream=upstream("A"))
    addr = ("127.0.0.1", p.port)
    # Fail loudly (not skip) if the listener does not speak h2c yet.
    c = H2Raw(addr)
    try:
        c.handshake()
    except (AssertionError, Closed, TimeoutError) as e:
        pytest.fail("the plaintext listener does not answer the HTTP/2 preface with SETTINGS (%s)" % e,
                    pytrace=False)
    finally:
        c.close()
    return addr


@pytest.fixture
def conn(h2addr):
    c = H2Raw(h2addr)
    yield c
    c.close()


@pytest.fixture
def ready(conn):
    conn.handshake()
    return conn


# --- connection preface and SETTINGS (RFC 9113 §3.4, §6.5) --------------------------------------

def test_valid_preface_gets_settings_and_our_settings_acked(ready):
    assert S_MAX_CONCURRENT_STREAMS in ready.server_settings
    ready.expect_alive()


def test_invalid_preface_is_connection_error(conn):
    conn.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings_frame())
    # As HTTP/1.1 it is a bad request; as HTTP/2 a PROTOCOL_ERROR. Either way the connection ends.
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = conn.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("connection still open after an invalid preface")
        except OSError:
            return
        if not data:
            return


def test_preface_not_followed_by_settings_is_protocol_error(conn):
    conn.send(PREFACE + frame(PING, 0, 0, b"\0" * 8))
    conn.expect_connection_error(PROTOCOL_ERROR)


def test_settings_ack_with_payload_is_frame_size_error(ready):
    ready.send(frame(SETTINGS, ACK, 0, b"\0\x01\0\0\0\x01"))
    ready.expect_connection_error(FRAME_SIZE_ERROR)


def test_settings_on_a_stream_is_protocol_error(ready):
    ready.send(frame(SETTINGS, 0, 1, b""))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_settings_length_not_multiple_of_six_is_frame_size_error(ready):
    ready.send(frame(SETTINGS, 0, 0, b"\0\x03\0\0"))
    ready.expect_connection_error(FRAME_SIZE_ERROR)


def test_settings_enable_push_two_is_protocol_error(ready):
    ready.send(settings_frame([(S_ENABLE_PUSH, 2)]))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_settings_initial_window_too_large_is_flow_control_error(ready):
    ready.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 1 << 31)]))
    ready.expect_connection_error(FLOW_CONTROL_ERROR)


def test_settings_max_frame_size_too_small_is_protocol_error(ready):
    ready.send(settings_frame([(S_MAX_FRAME_SIZE, 16383)]))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_unknown_setting_is_ignored_and_acked(ready):
    ready.send(settings_frame([(0xFF, 1)]))
    f = ready.read_frame()
    assert f.type == SETTINGS and f.flags & ACK, f
    ready.expect_alive()


# --- PING, GOAWAY, unknown frames (§6.7, §6.8, §5.5) -------------------------------------------

def test_ping_gets_ack_with_same_payload(ready):
    ready.send(frame(PING, 0, 0, b"12345678"))
    f = ready.read_frame()
    assert f.type == PING and f.flags & ACK and f.payload == b"12345678", f


def test_ping_ack_is_not_answered(ready):
    ready.send(frame(PING, ACK, 0, b"unasked!"))
    ready.expect_alive()


def test_ping_on_a_stream_is_protocol_error(ready):
    ready.send(frame(PING, 0, 1, b"12345678"))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_ping_of_wrong_length_is_frame_size_error(ready):
    ready.send(frame(PING, 0, 0, b"123456"))
    ready.expect_connection_error(FRAME_SIZE_ERROR)


def test_goaway_on_a_stream_is_protocol_error(ready):
    ready.send(frame(GOAWAY, 0, 1, struct.pack(">LL", 0, 0)))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_unknown_frame_type_is_ignored(ready):
    ready.send(frame(0xFA, 0, 0, b"whatever"))
    ready.expect_alive()
    ready.send(frame(0xFA, 0, 1, b"on an idle stream too"))
    ready.expect_alive()


def test_unknown_frame_inside_header_block_is_protocol_error(ready):
    ready.send(ready.headers(1, ready.request_fields(), end_headers=False) + frame(0xFA, 0, 1, b"x"))
    ready.expect_connection_error(PROTOCOL_ERROR)


# --- frame size (§4.2) ------------------------------------------------------------------------

def test_data_over_max_frame_size_is_frame_size_error(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(frame(DATA, 0, 1, b"x" * (ready.server_settings.get(S_MAX_FRAME_SIZE, 16384) + 1)))
    ready.expect_stream_error(1, FRAME_SIZE_ERROR)


def test_headers_over_max_frame_size_is_frame_size_error(ready):
    big = [("x-big-%d" % i, "v" * 1000) for i in range(20)]
    block = ready.header_block(ready.request_fields(extra=big))
    assert len(block) > 16384
    ready.send(ready.headers(1, None, raw_block=block))
    ready.expect_connection_error(FRAME_SIZE_ERROR)


# --- stream states (§5.1) ---------------------------------------------------------------------

def test_data_on_idle_stream_is_protocol_error(ready):
    ready.send(frame(DATA, 0, 1, b"x"))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_rst_stream_on_idle_stream_is_protocol_error(ready):
    ready.send(frame(RST_STREAM, 0, 1, struct.pack(">L", CANCEL)))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_window_update_on_idle_stream_is_protocol_error(ready):
    ready.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">L", 100)))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_continuation_on_idle_stream_is_protocol_error(ready):
    ready.send(frame(CONTINUATION, END_HEADERS, 1, ready.header_block(ready.request_fields())))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_even_stream_id_from_client_is_protocol_error(ready):
    ready.send(ready.headers(2, ready.request_fields()))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_decreasing_stream_id_is_protocol_error(ready):
    ready.send(ready.headers(5, ready.request_fields()))
    ready.response(5)
    ready.send(ready.headers(3, ready.request_fields()))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_skipped_lower_stream_id_is_protocol_error(ready):
    ready.send(ready.headers(5, ready.request_fields()) + ready.headers(3, ready.request_fields()))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_priority_for_idle_stream_then_lower_headers_is_served(ready):
    ready.send(frame(PRIORITY, 0, 3, struct.pack(">LB", 0, 255)))
    ready.send(ready.headers(1, ready.request_fields()))
    heads, _, _ = ready.response(1)
    assert dict(heads)[":status"] == "200"


def test_priority_on_stream_zero_is_protocol_error(ready):
    ready.send(frame(PRIORITY, 0, 0, struct.pack(">LB", 0, 255)))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_priority_of_wrong_length_is_frame_size_error(ready):
    ready.send(ready.headers(1, ready.request_fields()))
    ready.send(frame(PRIORITY, 0, 1, b"\x80\0\0\x01"))
    ready.expect_stream_error(1, FRAME_SIZE_ERROR, served_ok=True)


def test_rst_stream_of_wrong_length_is_frame_size_error(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(frame(RST_STREAM, 0, 1, b"\0\0\0"))
    ready.expect_connection_error(FRAME_SIZE_ERROR)


def test_rst_stream_with_unknown_code_is_ordinary(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(frame(RST_STREAM, 0, 1, struct.pack(">L", 0xFF)))
    ready.expect_alive()


def test_client_goaway_lets_the_server_close(ready):
    ready.send(frame(GOAWAY, 0, 0, struct.pack(">LL", 0, 0xFF)))
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert time.monotonic() < deadline, "connection not closed after the client's GOAWAY"
        try:
            f = ready.read_frame(timeout=max(0.1, deadline - time.monotonic()))
        except Closed:
            return
        except TimeoutError:
            raise AssertionError("connection not closed after the client's GOAWAY")
        assert f.type != GOAWAY or f.error_code == NO_ERROR, f


def test_data_on_closed_stream_is_stream_closed(ready):
    ready.send(ready.headers(1, ready.request_fields()))
    ready.response(1)
    ready.send(frame(DATA, 0, 1, b"late"))
    ready.expect_stream_error(1, STREAM_CLOSED)


def test_headers_on_half_closed_remote_stream_is_stream_closed(ready):
    ready.send(ready.headers(1, ready.request_fields(), end_stream=True))
    ready.send(ready.headers(1, [("x-more", "1")], end_stream=True))
    ready.expect_stream_error(1, STREAM_CLOSED, served_ok=True)


def test_data_after_client_reset_is_stream_closed(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(frame(RST_STREAM, 0, 1, struct.pack(">L", CANCEL)))
    ready.send(frame(DATA, 0, 1, b"after reset"))
    ready.expect_stream_error(1, STREAM_CLOSED)


def test_push_promise_from_client_is_protocol_error(ready):
    ready.send(frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">L", 2) + ready.header_block(ready.request_fields())))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_concurrent_stream_limit_is_enforced(ready):
    limit = ready.server_settings.get(S_MAX_CONCURRENT_STREAMS)
    assert limit is not None and limit <= 1000, "SETTINGS_MAX_CONCURRENT_STREAMS must be advertised"
    ready.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 0)]))  # keep every stream open
    block = ready.header_block(ready.request_fields())
    ready.send(b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, block) for i in range(limit + 1)))
    ready.expect_connection_error(PROTOCOL_ERROR, REFUSED_STREAM)


def test_stream_depending_on_itself_is_protocol_error(ready):
    prio = struct.pack(">LB", 1, 15)
    ready.send(frame(HEADERS, END_STREAM | END_HEADERS | PRIORITY_FLAG, 1, prio + ready.header_block(ready.request_fields())))
    ready.expect_stream_error(1, PROTOCOL_ERROR)


def test_priority_depending_on_itself_is_protocol_error(ready):
    ready.send(frame(PRIORITY, 0, 1, struct.pack(">LB", 1, 15)))
    ready.expect_stream_error(1, PROTOCOL_ERROR)


# --- DATA, HEADERS, padding, CONTINUATION (§6.1, §6.2, §6.10) ----------------------------------

def test_data_with_bad_padding_is_protocol_error(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(frame(DATA, PADDED | END_STREAM, 1, bytes([10]) + b"abc"))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_padded_data_is_accepted(ready):
    ready.send(ready.headers(1, ready.request_fields("POST", "/echo"), end_stream=False))
    ready.send(frame(DATA, PADDED | END_STREAM, 1, bytes([4]) + b"abc" + b"\0" * 4))
    heads, _, _ = ready.response(1)
    assert dict(heads)[":status"] == "200"


def test_headers_with_bad_padding_is_protocol_error(ready):
    block = ready.header_block(ready.request_fields())
    ready.send(frame(HEADERS, PADDED | END_STREAM | END_HEADERS, 1, bytes([len(block) + 5]) + block))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_continuation_is_accepted(ready):
    block = ready.header_block(ready.request_fields())
    half = len(block) // 2
    ready.send(frame(HEADERS, END_STREAM, 1, block[:half]) + frame(CONTINUATION, END_HEADERS, 1, block[half:]))
    heads, _, _ = ready.response(1)
    assert dict(heads)[":status"] == "200"


def test_continuation_on_another_stream_is_protocol_error(ready):
    block = ready.header_block(ready.request_fields())
    ready.send(frame(HEADERS, END_STREAM, 1, block[:5]) + frame(CONTINUATION, END_HEADERS, 3, block[5:]))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_continuation_after_end_headers_is_protocol_error(ready):
    ready.send(ready.headers(1, ready.request_fields()) + frame(CONTINUATION, END_HEADERS, 1, b""))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_continuation_flood_is_a_connection_error(ready):
    """CONTINUATION flood (VU#421644): endless CONTINUATION frames never reach END_HEADERS."""
    data = ready.headers(1, ready.request_fields(), end_headers=False)
    data += b"".join(frame(CONTINUATION, 0, 1, literal("x-f", "y" * 8)) for _ in range(5000))
    ready.send(data)
    ready.expect_connection_error(ENHANCE_YOUR_CALM, PROTOCOL_ERROR, INTERNAL_ERROR, FRAME_SIZE_ERROR)


# --- flow control (§6.9) ----------------------------------------------------------------------

def test_window_update_zero_on_connection_is_protocol_error(ready):
    ready.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 0)))
    ready.expect_connection_error(PROTOCOL_ERROR)


def test_window_update_zero_on_stream_is_protocol_error(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">L", 0)))
    ready.expect_stream_error(1, PROTOCOL_ERROR)


def test_window_update_of_wrong_length_is_frame_size_error(ready):
    ready.send(frame(WINDOW_UPDATE, 0, 0, b"\0\0\x01"))
    ready.expect_connection_error(FRAME_SIZE_ERROR)


def test_connection_window_overflow_is_flow_control_error(ready):
    ready.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 0x7FFFFFFF)) * 2)
    ready.expect_connection_error(FLOW_CONTROL_ERROR)


def test_stream_window_overflow_is_flow_control_error(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">L", 0x7FFFFFFF)) * 2)
    ready.expect_stream_error(1, FLOW_CONTROL_ERROR)


def test_response_data_respects_a_one_byte_window(ready):
    ready.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 1)]))
    ready.send(ready.headers(1, ready.request_fields()))
    sizes = []
    deadline = time.monotonic() + TIMEOUT
    while not sizes:
        assert time.monotonic() < deadline
        f = ready.read_frame()
        if f.type == HEADERS:
            ready.decode(f)
        elif f.type == DATA and f.stream == 1:
            sizes.append(len(f.payload))
    assert sizes == [1]
    # Nothing more until the window opens.
    with pytest.raises(TimeoutError):
        while True:
            f = ready.read_frame(timeout=0.5)
            assert f.type != DATA, "DATA beyond the window: %r" % f
    ready.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">L", 1 << 20)))
    while True:
        f = ready.read_frame()
        if f.type == DATA and f.stream == 1 and f.flags & END_STREAM:
            break


# --- HTTP semantics (§8) ----------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    pytest.param([(":method", "GET"), (":scheme", "http"), (":authority", "x")], id="missing-path"),
    pytest.param([(":method", "GET"), (":path", "/"), (":authority", "x")], id="missing-scheme"),
    pytest.param([(":scheme", "http"), (":path", "/"), (":authority", "x")], id="missing-method"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", ""), (":authority", "x")], id="empty-path"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":path", "/"), (":authority", "x")],
                 id="duplicate-path"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":foo", "x")], id="unknown-pseudo"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":status", "200")], id="response-pseudo"),
    pytest.param([(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":path", "/")], id="pseudo-after-regular"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("X-Upper", "1")], id="uppercase-name"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("connection", "keep-alive")],
                 id="connection"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("keep-alive", "timeout=5")],
                 id="keep-alive"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("proxy-connection", "close")],
                 id="proxy-connection"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("transfer-encoding", "chunked")],
                 id="transfer-encoding"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("upgrade", "h2c")], id="upgrade"),
    pytest.param([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("te", "gzip")], id="te-not-trailers"),
])
def test_malformed_request_is_stream_protocol_error(ready, fields):
    block = b"".join(literal(k, v) for k, v in fields)
    ready.send(ready.headers(1, None, raw_block=block))
    ready.expect_stream_error(1, PROTOCOL_ERROR)
    ready.expect_alive()


def test_te_trailers_is_allowed(ready):
    ready.send(ready.headers(1, ready.request_fields(extra=[("te", "trailers")])))
    heads, _, _ = ready.response(1)
    assert dict(heads)[":status"] == "200"


def test_content_length_mismatch_is_stream_protocol_error(ready):
    ready.send(ready.headers(1, ready.request_fields("POST", extra=[("content-length", "10")]), end_stream=False))
    ready.send(frame(DATA, END_STREAM, 1, b"abc"))
    ready.expect_stream_error(1, PROTOCOL_ERROR)


def test_trailers_without_end_stream_is_protocol_error(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(ready.headers(1, [("x-trailer", "1")], end_stream=False))
    ready.expect_stream_error(1, PROTOCOL_ERROR)


def test_pseudo_header_in_trailers_is_protocol_error(ready):
    ready.send(ready.headers(1, ready.request_fields("POST"), end_stream=False))
    ready.send(ready.headers(1, None, raw_block=literal(":path", "/x"), end_stream=True))
    ready.expect_stream_error(1, PROTOCOL_ERROR)


def test_invalid_hpack_is_compression_error(ready):
    # Indexed field 0 is invalid (RFC 7541 §6.1).
    ready.send(ready.headers(1, None, raw_block=b"\x80"))
    ready.expect_connection_error(COMPRESSION_ERROR)


def test_table_size_update_over_the_limit_is_compression_error(ready):
    # Dynamic table size update (001xxxxx, 5-bit prefix) to 8192 > SETTINGS_HEADER_TABLE_SIZE 4096.
    block = bytes([0x20 | 0x1F]) + hpack_int_rest(8192 - 31)
    ready.send(ready.headers(1, None, raw_block=block + ready.header_block(ready.request_fields())))
    ready.expect_connection_error(COMPRESSION_ERROR)


def hpack_int_rest(v):
    out = []
    while v >= 128:
        out.append(v % 128 + 128)
        v //= 128
    out.append(v)
    return bytes(out)


# --- limits against known attacks ---------------------------------------------------------------

def test_oversized_header_list_is_refused(ready):
    """Far over SETTINGS_MAX_HEADER_LIST_SIZE: a 431, a stream error or a connection error — never
    a forwarded request."""
    limit = ready.server_settings.get(S_MAX_HEADER_LIST_SIZE, 64 * 1024)
    fields = ready.request_fields(extra=[("x-big-%d" % i, "v" * 4000) for i in range(limit // 4000 + 4)])
    block = ready.header_block(fields)
    first, rest = block[:16000], block[16000:]
    data = frame(HEADERS, END_STREAM | (0 if rest else END_HEADERS), 1, first)
    while rest:
        piece, rest = rest[:16000], rest[16000:]
        data += frame(CONTINUATION, 0 if rest else END_HEADERS, 1, piece)
    ready.send(data)
    while True:
        try:
            f = ready.read_frame()
        except Closed:
            return
        if f.type == HEADERS and f.stream == 1:
            status = dict(ready.decode(f)).get(":status")
            assert status == "431", "oversized headers answered %s" % status
            return
        if f.type == GOAWAY or (f.type == RST_STREAM and f.stream == 1):
            assert f.error_code != NO_ERROR or f.type == RST_STREAM, f
            return


def test_hpack_bomb_is_bounded(ready):
    """One 4 KB entry in the dynamic table, then 1-byte references to it: ~8 MB decoded."""
    block = ready.header_block(ready.request_fields())
    block += b"\x40" + hpack_int(6, 7) + b"x-bomb" + hpack_int(4000, 7) + b"b" * 4000
    block += bytes([0x80 | 62]) * 2000
    ready.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
    while True:
        try:
            f = ready.read_frame()
        except Closed:
            return
        if f.type == HEADERS and f.stream == 1:
            assert dict(ready.decode(f)).get(":status") == "431"
            return
        if f.type in (GOAWAY, RST_STREAM):
            return


def test_rapid_reset_gets_goaway_enhance_your_calm(ready):
    """CVE-2023-44487: open and immediately reset streams, thousands per second."""
    data = b""
    sid = 1
    for _ in range(3000):
        data += ready.headers(sid, ready.request_fields()) + frame(RST_STREAM, 0, sid, struct.pack(">L", CANCEL))
        sid += 2
    ready.send(data)
    ready.expect_connection_error(ENHANCE_YOUR_CALM)


def test_ping_flood_is_stopped(ready):
    ready.send(frame(PING, 0, 0, b"\0" * 8) * 20000)
    ready.expect_connection_error(ENHANCE_YOUR_CALM)


def test_settings_flood_is_stopped(ready):
    ready.send(settings_frame([(S_INITIAL_WINDOW_SIZE, 65535)]) * 20000)
    ready.expect_connection_error(ENHANCE_YOUR_CALM)


# --- end to end with the h2 state machine ------------------------------------------------------

def h2_client(addr):
    sock = socket.create_connection(addr, timeout=TIMEOUT)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    sock.sendall(c.data_to_send())
    return sock, c


def h2_exchange(sock, c, stream_ids, timeout=TIMEOUT):
    """Runs the h2 state machine until every stream in `stream_ids` (an id or a list) ended;
    returns {id: (headers, body, trailers)}, or the one triple for a single id."""
    single = isinstance(stream_ids, int)
    want = {stream_ids} if single else set(stream_ids)
    results = {sid: [None, b"", None] for sid in want}
    done = set()
    deadline = time.monotonic() + timeout
    while done != want:
        assert time.monotonic() < deadline, "no complete response for %s" % sorted(want - done)
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        data = sock.recv(65536)
        assert data, "connection closed"
        for ev in c.receive_data(data):
            sid = getattr(ev, "stream_id", None)
            if isinstance(ev, h2.events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if sid not in want:
                if isinstance(ev, h2.events.ConnectionTerminated):
                    raise AssertionError("unexpected %r" % ev)
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                results[sid][0] = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                results[sid][1] += ev.data
            elif isinstance(ev, h2.events.TrailersReceived):
                results[sid][2] = ev.headers
            elif isinstance(ev, h2.events.StreamReset):
                raise AssertionError("unexpected %r" % ev)
            elif isinstance(ev, h2.events.StreamEnded):
                done.add(sid)
        sock.sendall(c.data_to_send())
    out = {sid: tuple(v) for sid, v in results.items()}
    return out[stream_ids] if single else out


def test_get_with_the_h2_state_machine(h2addr):
    sock, c = h2_client(h2addr)
    try:
        c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                           (":authority", "%s:%d" % h2addr)], end_stream=True)
        sock.sendall(c.data_to_send())
        headers, body, _ = h2_exchange(sock, c, 1)
        names = [k for k, _ in headers]
        assert dict(headers)[":status"] == "200"
        assert all(n == n.lower() for n in names)
        for banned in ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"):
            assert banned not in names
        assert body.startswith(b"hello")
    finally:
        sock.close()


def test_many_streams_and_large_response_with_the_h2_state_machine(h2addr):
    sock, c = h2_client(h2addr)
    try:
        for sid in (1, 3, 5):
            c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/bytes/300000"),
                                 (":authority", "%s:%d" % h2addr)], end_stream=True)
        sock.sendall(c.data_to_send())
        results = h2_exchange(sock, c, [1, 3, 5], timeout=15)
        for sid in (1, 3, 5):
            headers, body, _ = results[sid]
            assert dict(headers)[":status"] == "200"
            assert len(body) == 300000
    finally:
        sock.close()


def test_post_body_with_the_h2_state_machine(h2addr):
    sock, c = h2_client(h2addr)
    try:
        payload = b"z" * 200000
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":path", "/echo"),
                           (":authority", "%s:%d" % h2addr), ("content-length", str(len(payload)))])
        sent = 0
        deadline = time.monotonic() + 15
        while sent < len(payload):
            assert time.monotonic() < deadline, "request body stalled at %d" % sent
            window = min(c.local_flow_control_window(1), c.max_outbound_frame_size)
            if window > 0:
                n = min(window, len(payload) - sent)
                c.send_data(1, payload[sent:sent + n], end_stream=(sent + n == len(payload)))
                sent += n
                sock.sendall(c.data_to_send())
            else:
                sock.settimeout(1.0)
                data = sock.recv(65536)
                assert data
                c.receive_data(data)
                sock.sendall(c.data_to_send())
        headers, body, _ = h2_exchange(sock, c, 1, timeout=15)
        assert dict(headers)[":status"] == "200"
        assert str(len(payload)).encode() in body
    finally:
        sock.close()
