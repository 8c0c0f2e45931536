/* The sealer: moves the compliance log's chain forward and signs a checkpoint per brand, in
 * batches, after the records committed, so the request path never waits for it.
 *
 * A round:
 *   1. probe: is there anything past the sealed horizon? (cheap, no lock)
 *   2. fence: read the id sequence, then take an xid; wait (polling, never locking) until every
 *      transaction with a smaller xid has finished. Every id up to the value read is then final
 *      (committed, or never to exist): writers never wait for the sealer.
 *   3. read the records past the horizon up to that id, with each brand's latest checkpoint;
 *      hash and chain them in id order; sign one checkpoint per brand that grew. The records
 *      this node's workers committed come from the tap (audit/tap.h): for those only their ids
 *      are read, and whole rows only for the rest.
 *   4. write the checkpoints and move the horizon with a compare-and-set. Sealers on other nodes
 *      may race: exactly one wins a given horizon, the others' work is discarded.
 *
 * One sealer runs per node, on the main thread's loop with a connection of its own, so no
 * worker's requests wait while it hashes; with several nodes they take turns through the
 * compare-and-set. Every step is an asynchronous job of that pool. */
#ifndef HS_AUDIT_SEALER_H
#define HS_AUDIT_SEALER_H

#include <stdint.h>
#include <uv.h>

#include "audit/sign.h"
#include "audit/tap.h"
#include "db/pool.h"
#include "http/metrics.h"

typedef struct hs_sealer hs_sealer_t;

/* Starts sealing every interval_ms on loop through pool (borrowed, must outlive the sealer
 * until hs_sealer_close). key is borrowed and must outlive the sealer. tap (borrowed, may be
 * NULL) holds records this node committed, which a round then hashes without reading them
 * back; the sealer is its one consumer. metrics may be NULL. */
int hs_sealer_new(uv_loop_t *loop, hs_db_pool_t *pool, const hs_audit_key_t *key,
                  unsigned interval_ms, hs_audit_tap_t *tap, hs_metrics_shard_t *metrics,
                  hs_sealer_t **out);

/* Stops: a job in flight is cancelled (its transaction may still commit, which is harmless:
 * the next round starts from whatever the database holds). Frees itself once its timer is
 * closed. */
void hs_sealer_close(hs_sealer_t *s);

#endif
