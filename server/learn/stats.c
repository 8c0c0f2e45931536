#include "learn/stats.h"

#include <string.h>

#include "core/error.h"
#include "learn/learn.h"

/* Adds the items rows[0..n) of one slot to slots. */
static int add_slot(const hs_item_total_t *rows, size_t n, hs_arena_t *a, hs_value_t *slots) {
  hs_value_t *slot = hs_value_new_map(a, 2);
  if (slot == NULL || hs_map_add_str(a, slot, "slot", rows[0].slot) != HS_OK) {
    return HS_ENOMEM;
  }
  hs_value_t *items = hs_map_add_array(a, slot, "items");
  if (items == NULL) {
    return HS_ENOMEM;
  }
  size_t m = n < HS_LEARN_MAX_ARMS ? n : HS_LEARN_MAX_ARMS;
  hs_arm_t arms[HS_LEARN_MAX_ARMS];
  double p_best[HS_LEARN_MAX_ARMS];
  for (size_t i = 0; i < m; i++) {
    arms[i] = hs_learn_arm(0, 0, rows[i].shown, rows[i].successes);
  }
  if (hs_learn_p_best(arms, m, 1, HS_STATS_DRAWS, p_best) != HS_OK) {
    return HS_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    uint64_t shown = rows[i].shown;
    uint64_t wins = rows[i].successes < shown ? rows[i].successes : shown;
    double lo, hi;
    hs_learn_interval(wins, shown, &lo, &hi);
    hs_value_t *it = hs_value_new_map(a, 6);
    if (it == NULL) {
      return HS_ENOMEM;
    }
    int rc = hs_map_add_str(a, it, "id", rows[i].item);
    rc |= hs_map_add_int(a, it, "shown", (int64_t)shown);
    rc |= hs_map_add_int(a, it, "successes", (int64_t)wins);
    rc |= hs_map_add_float(a, it, "rate", shown > 0 ? (double)wins / (double)shown : 0.0);
    hs_value_t *iv = rc == HS_OK ? hs_map_add_array(a, it, "interval") : NULL;
    hs_value_t *vlo = hs_value_new_float(a, lo);
    hs_value_t *vhi = hs_value_new_float(a, hi);
    if (rc != HS_OK || iv == NULL || vlo == NULL || vhi == NULL ||
        hs_array_push(a, iv, vlo) == NULL || hs_array_push(a, iv, vhi) == NULL ||
        hs_map_add_float(a, it, "p_best", i < m ? p_best[i] : 0.0) != HS_OK ||
        hs_array_push(a, items, it) == NULL) {
      return HS_ENOMEM;
    }
  }
  return hs_array_push(a, slots, slot) != NULL ? HS_OK : HS_ENOMEM;
}

int hs_stats_build(const char *process, const hs_item_total_t *rows, size_t n, hs_arena_t *a,
                   hs_value_t **out) {
  hs_value_t *root = hs_value_new_map(a, 3);
  if (root == NULL || hs_map_add_str(a, root, "process", process) != HS_OK) {
    return HS_ENOMEM;
  }
  hs_value_t *slots = hs_map_add_array(a, root, "slots");
  if (slots == NULL) {
    return HS_ENOMEM;
  }
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && strcmp(rows[j].slot, rows[i].slot) == 0) {
      j++;
    }
    int rc = add_slot(rows + i, j - i, a, slots);
    if (rc != HS_OK) {
      return rc;
    }
    i = j;
  }
  *out = root;
  return HS_OK;
}
