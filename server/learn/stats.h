/* The content stats of SPEC §4 (GET /v1/content/stats, `handsel report`), computed once for
 * both: per slot and item, how often it was shown, how many of those visits succeeded, the
 * rate with its 95% Wilson interval, and the chance that it is the best item of its slot. */
#ifndef HS_LEARN_STATS_H
#define HS_LEARN_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "codec/value.h"
#include "core/arena.h"

/* One item's totals, summed over the context keys scripts gave. */
typedef struct hs_item_total {
  const char *slot; /* borrowed */
  const char *item; /* borrowed */
  uint64_t shown;
  uint64_t successes;
} hs_item_total_t;

/* Draws behind p_best: its estimate is within about 0.01 and the same on every call. */
enum { HS_STATS_DRAWS = 20000 };

/* Builds {process, slots = [{slot, items = [{id, shown, successes, rate, interval = [lo, hi],
 * p_best}]}]} in a from rows[0..n), which must be ordered by slot (items keep their order).
 * p_best compares the items of a slot by their Beta(1 + successes, 1 + failures) posteriors,
 * what the visits showed, without the brand's priors; a slot with more than HS_LEARN_MAX_ARMS
 * items compares its first ones and gives the rest 0. Returns HS_OK or HS_ENOMEM. */
int hs_stats_build(const char *process, const hs_item_total_t *rows, size_t n, hs_arena_t *a,
                   hs_value_t **out);

#endif
