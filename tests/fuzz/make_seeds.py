#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses (tests/fuzz/<harness>/seeds/).

The seeds are committed; run this again only to change them. Wire vectors, shipped processes
and the hostile engine scripts are not copied: scripts/fuzz reads them where they are. The
rest (hostile msgpack and JSON, completion bodies, HTTP/2 conversations) is built here, with a minimal msgpack encoder and hand-made HTTP/2 frames
so that nothing beyond Python's standard library is needed."""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def seeds_dir(harness):
    d = os.path.join(HERE, harness, "seeds")
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


def write(d, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


class Bin(bytes):
    pass


def mp(v):
    """The smallest msgpack encoding of v (as the server's encoder writes it)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        for lo, hi, tag, fmt in ((0, 0xFF, 0xCC, ">B"), (0, 0xFFFF, 0xCD, ">H"),
                                 (0, 0xFFFFFFFF, 0xCE, ">I"), (0, 2**64 - 1, 0xCF, ">Q"),
                                 (-128, 127, 0xD0, ">b"), (-2**15, 2**15 - 1, 0xD1, ">h"),
                                 (-2**31, 2**31 - 1, 0xD2, ">i"), (-2**63, 2**63 - 1, 0xD3, ">q")):
            if lo <= v <= hi:
                return bytes([tag]) + struct.pack(fmt, v)
        raise ValueError(v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, Bin):
        n = len(v)
        head = bytes([0xC4, n]) if n < 256 else b"\xc5" + struct.pack(">H", n)
        return head + bytes(v)
    if isinstance(v, (str, bytes)):
        b = v.encode() if isinstance(v, str) else v
        n = len(b)
        if n < 32:
            head = bytes([0xA0 | n])
        elif n < 256:
            head = bytes([0xD9, n])
        else:
            head = b"\xda" + struct.pack(">H", n)
        return head + b
    if isinstance(v, list):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
        return head + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


# ---- msgpack

d = seeds_dir("fuzz_msgpack")
write(d, "bomb-array32", b"\xdd\x00\xff\xff\xff")
write(d, "bomb-map32", b"\xdf\xff\xff\xff\xff")
write(d, "bomb-str32", b"\xdb\x7f\xff\xff\xff")
write(d, "bomb-bin32", b"\xc6\xff\xff\xff\xff")
write(d, "deep-40", b"\x91" * 40 + b"\xc0")
write(d, "deep-16", b"\x91" * 16 + b"\xc0")
write(d, "deep-map-17", b"\x81\xa1k" * 17 + b"\xc0")
write(d, "truncated-map", mp({"a": [1, 2, 3], "b": "hello"})[:-3])
write(d, "truncated-str16", b"\xda\x00\x10abc")
write(d, "trailing-byte", mp({"a": 1}) + b"\xc0")
write(d, "dup-key", b"\x82\xa1a\x01\xa1a\x02")
write(d, "int-key", b"\x81\x01\x02")
write(d, "bad-utf8", b"\xa3a\xff\xfe")
write(d, "nul-in-str", b"\xa3a\x00b")
write(d, "surrogate", b"\xa3\xed\xa0\x80")
write(d, "overlong", b"\xa2\xc0\xaf")
write(d, "ext-fixext1", b"\xd4\x01\x02")
write(d, "ext8", b"\xc7\x03\x05abc")
write(d, "timestamp", b"\xd6\xff\x00\x00\x00\x00")
write(d, "float32", b"\xca\x3f\xc0\x00\x00")
write(d, "float32-nan", b"\xca\x7f\xc0\x00\x00")
write(d, "float64-inf", b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00")
write(d, "uint64-max", b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff")
write(d, "uint64-small", b"\xcf\x00\x00\x00\x00\x00\x00\x00\x01")
write(d, "int64-min", b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00")
write(d, "never-used", b"\xc1")
write(d, "wide-array16", b"\xdc\x00\x03\x01\x02\x03")
write(d, "wide-map16", b"\xde\x00\x01\xa1x\xc3")

# ---- JSON

d = seeds_dir("fuzz_json")
write(d, "deep-40", "[" * 40 + "]" * 40)
write(d, "deep-16", "[" * 16 + "]" * 16)
write(d, "unclosed", '{"a": [1, 2, {"b": "c"')
write(d, "dup-key", '{"a": 1, "a": 2}')
write(d, "int-overflow", "[9223372036854775807, -9223372036854775808, 9223372036854775808]")
write(d, "float-overflow", "[1e999]")
write(d, "floats", "[1.0, -0.0, 1e-320, 5e-324, 1.7976931348623157e308, 0.1, 123456789.123456789]")
write(d, "escapes", r'["\u00e9\ud83d\ude00\n\t\"\\\/", "\ud800", "\u0000"]')
write(d, "bad-utf8", b'["a\xff"]')
write(d, "bom", b'\xef\xbb\xbf{"a": 1}')
write(d, "trailing", '{"a": 1} x')
write(d, "literals", "[true, false, null, 0, -1, 1E2, 1e+2]")
write(d, "whitespace", ' \r\n\t{ "k" : [ ] , "m" : { } } \n')
write(d, "many-members", "{" + ",".join('"k%d": %d' % (i, i) for i in range(200)) + "}")

# ---- completion data for the every-field step of fuzz_validate.c

PHOTO = "sha256:" + "a" * 64
full = {
    "note": "hello world", "free": "x", "count": 3, "weight": 12.5, "agree": True,
    "colour": "green", "extras": ["a", "c"], "when": "2024-02-29", "photo": PHOTO, "sig": PHOTO,
    "read_terms": True, "where": {"lat": 37.77, "lon": -122.41, "accuracy": 12}, "stars": 4,
}
d = seeds_dir("fuzz_validate")
write(d, "full", mp(full))
write(d, "minimal", mp({"note": "a", "count": 0, "agree": False}))
write(d, "empty-map", mp({}))
write(d, "nil", mp(None))
write(d, "array", mp([1, 2]))
write(d, "red-two-extras", mp(dict(full, colour="red", extras=["a", "b"])))
write(d, "count-over-weight", mp(dict(full, count=100, weight=1.0)))
write(d, "north", mp(dict(full, where={"lat": 89.5, "lon": 0, "accuracy": 1})))
wrong = {
    "note": "no-dashes-allowed!", "free": 7, "count": 1.5, "weight": "heavy", "agree": "yes",
    "colour": "purple", "extras": ["a", "a", "z", "b"], "when": "2024-02-30", "photo": "sha1:x",
    "sig": Bin(b"\x00\x01"), "read_terms": False, "where": {"lat": 91, "lon": 181},
    "stars": 6, "unknown": True,
}
write(d, "all-wrong", mp(wrong))
write(d, "long-note", mp(dict(full, note="a" * 41)))
write(d, "int-as-float", mp(dict(full, count=7.0, stars=5.0)))
write(d, "huge-numbers", mp(dict(full, count=2**63 - 1, weight=1e308, stars=-2**63)))
write(d, "uint64", b"\x81\xa5count\xcf\xff\xff\xff\xff\xff\xff\xff\xff")
write(d, "nan", mp(dict(full, weight=float("nan"))))
write(d, "empty-strings", mp(dict(full, note="", colour="", when="", photo="")))
write(d, "date-bounds", mp(dict(full, when="2019-12-31")))
write(d, "where-accuracy", mp(dict(full, where={"lat": 0, "lon": 0, "accuracy": 51})))
write(d, "nested-extras", mp(dict(full, extras=[["a"], {"b": 1}])))

# ---- Lua sources

d = seeds_dir("fuzz_process_load")
write(d, "empty", "")
write(d, "minimal", "return process { name = 'p', title = 'P', run = function(visit) end }\n")
write(d, "one-step", """return process {
  name = 'one-step', title = 'One step', goals = { ok = 'Done' },
  run = function(visit)
    local d = visit:step { id = 's', title = 'S', fields = { field.integer { name = 'n', min = 1 } } }
    visit:outcome('ok')
  end,
}
""")

# ---- HTTP/2 conversations (after the client preface, which the harness sends itself)

def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20


def lit(name, value):
    """HPACK literal header field without indexing, new name, no Huffman."""
    def s(x):
        x = x.encode()
        assert len(x) < 127
        return bytes([len(x)]) + x
    return b"\x00" + s(name) + s(value)


def request(method, path, extra=(), scheme="http"):
    block = lit(":method", method) + lit(":scheme", scheme) + lit(":path", path) + lit(":authority", "localhost")
    for n, v in extra:
        block += lit(n, v)
    return block


settings = frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535) + struct.pack(">HI", 2, 0))
settings_ack = frame(SETTINGS, ACK, 0)
d = seeds_dir("fuzz_h2_session")
write(d, "settings-only", settings)
write(d, "healthz", settings + settings_ack + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/healthz")))
write(d, "healthz-indexed", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x82\x86\x84\x41\x09localhost"))
write(d, "metrics", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/metrics")))
write(d, "readyz", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/readyz")))
body = mp({"hello": [1, 2.5, "x", None, True]})
write(d, "echo-msgpack", settings + frame(HEADERS, END_HEADERS, 1, request("POST", "/debug/echo", [("content-type", "application/msgpack"), ("content-length", str(len(body)))])) + frame(DATA, END_STREAM, 1, body))
jbody = b'{"hello": [1, 2.5, "x", null, true]}'
write(d, "echo-json", settings + frame(HEADERS, END_HEADERS, 1, request("POST", "/debug/echo", [("content-type", "application/json"), ("accept", "application/json")])) + frame(DATA, 0, 1, jbody[:10]) + frame(DATA, END_STREAM, 1, jbody[10:]))
write(d, "echo-bad-body", settings + frame(HEADERS, END_HEADERS, 1, request("POST", "/debug/echo", [("content-type", "application/json")])) + frame(DATA, END_STREAM, 1, b'{"a": '))
write(d, "echo-length-mismatch", settings + frame(HEADERS, END_HEADERS, 1, request("POST", "/debug/echo", [("content-length", "3")])) + frame(DATA, END_STREAM, 1, b"\x93\x01\x02\x03\x04"))
write(d, "stream", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/debug/stream?chunks=3&size=100&interval_ms=0")))
write(d, "stream-reset", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/debug/stream?chunks=100&size=20000&interval_ms=0")) + frame(RST, 0, 1, struct.pack(">I", 8)))
write(d, "stream-window", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/debug/stream?chunks=5&size=70000&interval_ms=0")) + frame(WINDOW, 0, 1, struct.pack(">I", 100000)) + frame(WINDOW, 0, 0, struct.pack(">I", 100000)))
write(d, "blob-put", settings + frame(HEADERS, END_HEADERS, 1, request("PUT", "/v1/blobs/" + "a" * 64, [("content-type", "application/octet-stream")])) + frame(DATA, END_STREAM, 1, b"\x00" * 64))
write(d, "step-post", settings + frame(HEADERS, END_HEADERS, 1, request("POST", "/v1/sessions/abc/steps/1")) + frame(DATA, END_STREAM, 1, mp({"a": 1})))
write(d, "not-found-405", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/nope")) + frame(HEADERS, END_HEADERS | END_STREAM, 3, request("DELETE", "/healthz")))
write(d, "continuation", settings + frame(HEADERS, 0, 1, request("GET", "/healthz")[:20]) + frame(CONT, END_HEADERS, 1, request("GET", "/healthz")[20:]))
write(d, "padded-priority", settings + frame(HEADERS, END_HEADERS | END_STREAM | PADDED | PRIO, 1, b"\x04" + struct.pack(">IB", 0, 15) + request("GET", "/healthz") + b"\x00" * 4) + frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 7)))
write(d, "ping-goaway", settings + frame(PING, 0, 0, b"12345678") + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
write(d, "many-streams", settings + b"".join(frame(HEADERS, END_HEADERS | END_STREAM, i, request("GET", "/healthz")) for i in range(1, 40, 2)))
write(d, "rapid-reset", settings + b"".join(frame(HEADERS, END_HEADERS, i, request("POST", "/debug/echo")) + frame(RST, 0, i, struct.pack(">I", 8)) for i in range(1, 60, 2)))
write(d, "query-escapes", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/debug/stream?chunks=%31&size=1%0&interval_ms=0&x=%zz")))
write(d, "bad-headers", settings + frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/healthz", [("Upper", "x"), ("connection", "close"), ("te", "gzip")])))
write(d, "no-settings", frame(HEADERS, END_HEADERS | END_STREAM, 1, request("GET", "/healthz")))
write(d, "garbage", b"\xff" * 32)
