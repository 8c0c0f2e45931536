/* Test routes, served only with HANDSEL_DEBUG_ROUTES=1. They exercise the server core the way
 * the product's routes will: /debug/echo decodes a body in either wire format and answers it
 * back; /debug/stream is a long response fed from a timer through a deferred data source, with
 * backpressure and cancellation, like the session stream. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "http/request.h"
#include "http/worker.h"

void hs_api_debug_echo(hs_req_t *req) {
  hs_value_t *v = NULL;
  if (hs_req_decode_body(req, &v) != HS_OK) {
    return; /* already answered 400/413 */
  }
  hs_req_respond(req, 200, v);
}

typedef struct debug_stream {
  uv_timer_t timer; /* first: freed in its close callback */
  hs_req_t *req;    /* borrowed; NULL once the stream is gone */
  uint64_t chunks_left;
  size_t size;
  char *chunk; /* owned */
} debug_stream_t;

static void on_timer_closed(uv_handle_t *h) {
  debug_stream_t *ds = h->data;
  free(ds->chunk);
  free(ds);
}

static void ds_finish(debug_stream_t *ds) {
  ds->req = NULL;
  uv_close((uv_handle_t *)&ds->timer, on_timer_closed);
}

static void ds_cancel(hs_req_t *req) {
  /* The client reset the stream or the connection died: stop producing. */
  ds_finish(req->data);
}

static void ds_pump(debug_stream_t *ds) {
  while (ds->req != NULL && ds->chunks_left > 0) {
    int rc = hs_req_stream_write(ds->req, ds->chunk, ds->size);
    if (rc == HS_ELIMIT) {
      return; /* on_drain resumes us */
    }
    if (rc != HS_OK) {
      hs_req_t *req = ds->req;
      ds_finish(ds);
      hs_req_stream_end(req);
      return;
    }
    ds->chunks_left--;
    if (uv_timer_get_repeat(&ds->timer) != 0) {
      break; /* one chunk per tick */
    }
  }
  if (ds->req != NULL && ds->chunks_left == 0) {
    hs_req_t *req = ds->req;
    ds_finish(ds);
    hs_req_stream_end(req);
  }
}

static void ds_on_timer(uv_timer_t *t) {
  ds_pump(t->data);
}

static void ds_on_drain(hs_req_t *req) {
  debug_stream_t *ds = req->data;
  if (uv_timer_get_repeat(&ds->timer) == 0) {
    ds_pump(ds);
  }
}

static uint64_t query_u64(hs_req_t *req, const char *name, uint64_t def, uint64_t max) {
  char v[32];
  if (hs_req_query(req, name, v, sizeof v) != HS_OK) {
    return def;
  }
  char *end = NULL;
  unsigned long long n = strtoull(v, &end, 10);
  if (end == v || *end != '\0' || n > max) {
    return UINT64_MAX;
  }
  return n;
}

void hs_api_debug_stream(hs_req_t *req) {
  uint64_t chunks = query_u64(req, "chunks", 10, 1000000);
  uint64_t size = query_u64(req, "size", 1024, 1024 * 1024);
  uint64_t interval = query_u64(req, "interval_ms", 10, 60000);
  if (chunks == UINT64_MAX || size == UINT64_MAX || size == 0 || interval == UINT64_MAX) {
    hs_req_respond_error(req, 400, "malformed",
                         "chunks (0-1000000), size (1-1048576) and interval_ms (0-60000) must be "
                         "whole numbers in range");
    return;
  }
  debug_stream_t *ds = calloc(1, sizeof *ds);
  char *chunk = malloc(size);
  if (ds == NULL || chunk == NULL) {
    free(ds);
    free(chunk);
    hs_req_respond_error(req, 503, "unavailable", "The server is short of memory");
    return;
  }
  memset(chunk, 'x', size);
  ds->chunk = chunk;
  ds->size = size;
  ds->chunks_left = chunks;
  ds->req = req;
  uv_timer_init(&req->worker->loop, &ds->timer);
  ds->timer.data = ds;
  req->data = ds;
  req->on_cancel = ds_cancel;
  req->on_drain = ds_on_drain;
  if (hs_req_stream_start(req, 200, "application/octet-stream") != HS_OK) {
    req->on_cancel = NULL;
    ds_finish(ds);
    hs_req_respond_error(req, 500, "internal", "The stream could not start");
    return;
  }
  if (ds->req == NULL) {
    return; /* cancelled while starting */
  }
  if (interval == 0) {
    uv_timer_start(&ds->timer, ds_on_timer, 0, 0);
  } else {
    uv_timer_start(&ds->timer, ds_on_timer, interval, interval);
  }
}
