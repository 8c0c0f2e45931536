/* A raw HTTP/2 frame writer and reader, for hostile clients: it writes whatever frames a test
 * asks for, in any order, whether or not they make sense, and reads what the server answers
 * frame by frame. It speaks h2c to 127.0.0.1 only.
 *
 * Frames the server sends are parsed as they are read, and the connection keeps a summary of
 * them (GOAWAY, RST_STREAM, SETTINGS, and per stream :status and DATA bytes), so a test can
 * drain the socket and then ask what happened.
 *
 * Return values follow server/core/error.h: 0 or a negative HS_E* code; HS_EUNAVAIL means a
 * deadline passed (the peer takes or sends nothing), HS_EIO that the connection is closed. */
#ifndef HS_TEST_RAW_H
#define HS_TEST_RAW_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Frame types and flags, from RFC 9113 §6. */
enum {
  HS_RAW_DATA = 0x0,
  HS_RAW_HEADERS = 0x1,
  HS_RAW_PRIORITY = 0x2,
  HS_RAW_RST_STREAM = 0x3,
  HS_RAW_SETTINGS = 0x4,
  HS_RAW_PUSH_PROMISE = 0x5,
  HS_RAW_PING = 0x6,
  HS_RAW_GOAWAY = 0x7,
  HS_RAW_WINDOW_UPDATE = 0x8,
  HS_RAW_CONTINUATION = 0x9,
};
enum {
  HS_RAW_FLAG_END_STREAM = 0x1,
  HS_RAW_FLAG_ACK = 0x1,
  HS_RAW_FLAG_END_HEADERS = 0x4,
  HS_RAW_FLAG_PADDED = 0x8,
  HS_RAW_FLAG_PRIORITY = 0x20,
};

/* What the server did to one stream, as seen in its frames. */
typedef struct hs_raw_stream {
  int32_t id;
  int status;          /* :status of the response HEADERS, 0 if none */
  uint64_t data_bytes; /* DATA payload received */
  bool end_stream;     /* a frame with END_STREAM arrived */
  bool reset;          /* RST_STREAM arrived */
  uint32_t reset_code;
} hs_raw_stream_t;

#define HS_RAW_MAX_STREAMS 4096

typedef struct hs_raw {
  int fd;
  hs_buf_t in;                   /* bytes read and not yet parsed into a frame */
  bool closed;                   /* EOF or a reset: nothing more will arrive */
  bool write_failed;             /* a write hit a closed connection */
  nghttp2_hd_deflater *deflater; /* owned: for requests written with hs_raw_request */
  nghttp2_hd_inflater *inflater; /* owned: keeps the server's header blocks in sync */
  hs_buf_t hblock;               /* a server header block in progress (HEADERS+CONTINUATION) */
  int32_t hblock_stream;

  /* The summary of what was received. */
  uint64_t frames;                 /* frames received */
  uint64_t bytes;                  /* bytes received */
  bool got_settings;               /* the server's (non-ACK) SETTINGS */
  uint32_t max_concurrent_streams; /* as the server announced it; 0xffffffff if it did not */
  uint32_t initial_window;         /* as the server announced it; 65535 if it did not */
  uint32_t max_header_list;        /* as the server announced it; 0xffffffff if it did not */
  uint64_t settings_acks;          /* SETTINGS frames with ACK */
  uint64_t ping_acks;              /* PING frames with ACK */
  bool goaway;
  uint32_t goaway_code;
  int32_t goaway_last_stream;
  uint64_t rst_count;                          /* RST_STREAM frames received */
  hs_raw_stream_t streams[HS_RAW_MAX_STREAMS]; /* the first HS_RAW_MAX_STREAMS streams seen */
  size_t n_streams;
} hs_raw_t;

/* One frame as read. payload is owned by the frame; free it with hs_raw_frame_free. */
typedef struct hs_raw_frame {
  uint32_t length;
  uint8_t type;
  uint8_t flags;
  int32_t stream_id;
  uint8_t *payload;
} hs_raw_frame_t;

/* Connects to 127.0.0.1:port (blocking, up to 5 s). r is initialized here; free it with
 * hs_raw_close. */
int hs_raw_connect(hs_raw_t *r, int port);

/* Closes the socket and frees everything r owns. */
void hs_raw_close(hs_raw_t *r);

/* Writes bytes, waiting at most timeout_ms for the socket to take them all. Returns 0,
 * HS_EUNAVAIL (the peer took nothing for timeout_ms), or HS_EIO (closed or reset). */
int hs_raw_write(hs_raw_t *r, const void *p, size_t n, int timeout_ms);

/* Writes one frame header and payload (length taken from len). */
int hs_raw_frame(hs_raw_t *r, uint8_t type, uint8_t flags, int32_t stream_id, const void *payload,
                 size_t len, int timeout_ms);

/* Appends one frame (9-byte header and payload) to out without writing it, so a test can
 * send thousands of frames in a few writes. */
int hs_raw_frame_append(hs_buf_t *out, uint8_t type, uint8_t flags, int32_t stream_id,
                        const void *payload, size_t len);

/* The client preface: the magic string and one SETTINGS frame with the given entries. */
int hs_raw_preface(hs_raw_t *r, const nghttp2_settings_entry *iv, size_t n);

/* The preface with a window so large (2^31-1 per stream and for the connection) that flow
 * control never holds the server back: only TCP and the server's own limits do. */
int hs_raw_preface_big_window(hs_raw_t *r);

/* Reads frames until the server's SETTINGS arrived, then ACKs them. */
int hs_raw_handshake(hs_raw_t *r, int timeout_ms);

int hs_raw_settings(hs_raw_t *r, const nghttp2_settings_entry *iv, size_t n);
int hs_raw_settings_ack(hs_raw_t *r);
int hs_raw_ping(hs_raw_t *r, uint64_t opaque);
int hs_raw_rst_stream(hs_raw_t *r, int32_t stream_id, uint32_t code);
int hs_raw_window_update(hs_raw_t *r, int32_t stream_id, uint32_t increment);
int hs_raw_priority(hs_raw_t *r, int32_t stream_id, int32_t depends_on, uint8_t weight);
int hs_raw_data(hs_raw_t *r, int32_t stream_id, bool end_stream, const void *p, size_t n);
int hs_raw_headers(hs_raw_t *r, int32_t stream_id, uint8_t flags, const void *block, size_t n);
int hs_raw_continuation(hs_raw_t *r, int32_t stream_id, bool end_headers, const void *block,
                        size_t n);

/* HPACK-encodes a header list with r's deflater (so its dynamic table stays in step with the
 * server's) and appends the block to out. nv entries are used as given: a test may pass
 * malformed pseudo-headers on purpose. */
int hs_raw_encode(hs_raw_t *r, const nghttp2_nv *nv, size_t n, hs_buf_t *out);

/* Encodes and writes a whole request: HEADERS (END_HEADERS, and END_STREAM when end_stream)
 * with :method, :scheme http, :authority, :path and the extra fields. */
int hs_raw_request(hs_raw_t *r, int32_t stream_id, const char *method, const char *path,
                   const nghttp2_nv *extra, size_t n_extra, bool end_stream);

/* Reads one frame, waiting at most timeout_ms. Returns 1 with *f filled (payload owned by *f;
 * f may be NULL to discard it), 0 on timeout, HS_EIO when the connection closed. Every frame
 * read also updates r's summary. */
int hs_raw_read_frame(hs_raw_t *r, hs_raw_frame_t *f, int timeout_ms);
void hs_raw_frame_free(hs_raw_frame_t *f);

/* Reads and discards frames (updating the summary) for up to timeout_ms, or until the
 * connection closes. Returns HS_EIO if it closed, 0 if it is still open at the deadline. */
int hs_raw_drain(hs_raw_t *r, int timeout_ms);

/* Reads frames until the connection closes, waiting at most timeout_ms. Returns 0 when it
 * closed, HS_EUNAVAIL when it is still open at the deadline. */
int hs_raw_wait_closed(hs_raw_t *r, int timeout_ms);

/* Reads frames until pred(r, arg) is true (checked before each read), the connection closes
 * (HS_EIO) or timeout_ms passes (HS_EUNAVAIL). */
int hs_raw_read_until(hs_raw_t *r, bool (*pred)(const hs_raw_t *, const void *), const void *arg,
                      int timeout_ms);

/* The summary of one stream, or NULL if the server sent nothing on it. */
const hs_raw_stream_t *hs_raw_stream(const hs_raw_t *r, int32_t stream_id);

/* A static name for an HTTP/2 error code ("ENHANCE_YOUR_CALM"), for messages. */
const char *hs_raw_error_name(uint32_t code);

#endif
