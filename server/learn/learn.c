#include "learn/learn.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

uint64_t hs_learn_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double hs_learn_uniform(uint64_t *state) {
  /* 53 random bits, centred in their interval: never exactly 0 or 1, so logs stay finite. */
  return ((double)(hs_learn_next(state) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double hs_learn_normal(uint64_t *state) {
  double u1 = hs_learn_uniform(state);
  double u2 = hs_learn_uniform(state);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double hs_learn_gamma(uint64_t *state, double shape) {
  if (shape < 1.0) {
    /* Gamma(a) = Gamma(a + 1) * U^(1/a): Marsaglia and Tsang need a shape of at least 1. */
    double g = hs_learn_gamma(state, shape + 1.0);
    return g * pow(hs_learn_uniform(state), 1.0 / shape);
  }
  double d = shape - 1.0 / 3.0;
  double c = 1.0 / sqrt(9.0 * d);
  for (;;) {
    double x = hs_learn_normal(state);
    double v = 1.0 + c * x;
    if (v <= 0.0) {
      continue;
    }
    v = v * v * v;
    double u = hs_learn_uniform(state);
    if (u < 1.0 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) {
      return d * v;
    }
  }
}

double hs_learn_beta(uint64_t *state, double a, double b) {
  double x = hs_learn_gamma(state, a);
  double y = hs_learn_gamma(state, b);
  return x + y > 0.0 ? x / (x + y) : 0.5;
}

hs_arm_t hs_learn_arm(double prior_s, double prior_f, uint64_t shown, uint64_t successes) {
  if (successes > shown) {
    successes = shown; /* a counter read mid-update must not make beta smaller than its prior */
  }
  return (hs_arm_t){.alpha = 1.0 + prior_s + (double)successes,
                    .beta = 1.0 + prior_f + (double)(shown - successes)};
}

/* One Thompson draw per item into theta. */
static void draw_all(const hs_arm_t *arms, size_t n, uint64_t *rng, double *theta) {
  for (size_t i = 0; i < n; i++) {
    theta[i] = hs_learn_beta(rng, arms[i].alpha, arms[i].beta);
  }
}

/* How many items drew higher than item i (ties go to the lower index, as the pick does). */
static size_t rank_of(const double *theta, size_t n, size_t i) {
  size_t r = 0;
  for (size_t j = 0; j < n; j++) {
    if (theta[j] > theta[i] || (theta[j] == theta[i] && j < i)) {
      r++;
    }
  }
  return r;
}

int hs_learn_pick(const hs_arm_t *arms, size_t n, size_t count, double floor, uint64_t seed,
                  size_t *picks, double *propensity) {
  if (n == 0 || n > HS_LEARN_MAX_ARMS || count == 0 || count > n) {
    return HS_EINVAL;
  }
  /* Two generators from one seed: the pick's, and the estimate's, so the number of draws the
   * estimate takes never changes what is picked. */
  uint64_t pick_rng = seed;
  uint64_t mc_rng = seed ^ 0x5851f42d4c957f2dull;
  (void)hs_learn_next(&mc_rng);
  double theta[HS_LEARN_MAX_ARMS];
  if (hs_learn_uniform(&pick_rng) < floor) {
    /* Explore: a uniform subset (partial Fisher-Yates), in the order drawn. */
    size_t idx[HS_LEARN_MAX_ARMS];
    for (size_t i = 0; i < n; i++) {
      idx[i] = i;
    }
    for (size_t i = 0; i < count; i++) {
      size_t j = i + (size_t)(hs_learn_next(&pick_rng) % (uint64_t)(n - i));
      size_t t = idx[i];
      idx[i] = idx[j];
      idx[j] = t;
      picks[i] = idx[i];
    }
  } else {
    draw_all(arms, n, &pick_rng, theta);
    for (size_t i = 0; i < n; i++) {
      size_t r = rank_of(theta, n, i);
      if (r < count) {
        picks[r] = i;
      }
    }
  }
  /* The chance each pick had: floor * count/n from exploring, plus (1 - floor) times how often
   * a Thompson draw puts it among the count highest. */
  size_t draws = HS_LEARN_DRAWS / n;
  if (draws < 200) {
    draws = 200;
  }
  size_t hits[HS_LEARN_MAX_ARMS];
  memset(hits, 0, sizeof hits);
  for (size_t d = 0; d < draws; d++) {
    draw_all(arms, n, &mc_rng, theta);
    for (size_t k = 0; k < count; k++) {
      if (rank_of(theta, n, picks[k]) < count) {
        hits[k]++;
      }
    }
  }
  for (size_t k = 0; k < count; k++) {
    propensity[k] =
        floor * (double)count / (double)n + (1.0 - floor) * (double)hits[k] / (double)draws;
  }
  return HS_OK;
}

void hs_learn_interval(uint64_t successes, uint64_t shown, double *lo, double *hi) {
  if (shown == 0) {
    *lo = 0.0;
    *hi = 1.0;
    return;
  }
  if (successes > shown) {
    successes = shown;
  }
  const double z = 1.959963984540054;
  double n = (double)shown;
  double p = (double)successes / n;
  double denom = 1.0 + z * z / n;
  double centre = (p + z * z / (2.0 * n)) / denom;
  double half = z * sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom;
  /* Rounding must never leave the observed rate outside its own interval (10 of 10 gives a
   * bound of 0.9999999999999999 otherwise). */
  *lo = centre - half < 0.0 ? 0.0 : centre - half > p ? p : centre - half;
  *hi = centre + half > 1.0 ? 1.0 : centre + half < p ? p : centre + half;
}

int hs_learn_p_best(const hs_arm_t *arms, size_t n, uint64_t seed, unsigned draws, double *p_best) {
  if (n == 0 || n > HS_LEARN_MAX_ARMS || draws == 0) {
    return HS_EINVAL;
  }
  uint64_t rng = seed;
  double theta[HS_LEARN_MAX_ARMS];
  unsigned wins[HS_LEARN_MAX_ARMS];
  memset(wins, 0, sizeof wins);
  for (unsigned d = 0; d < draws; d++) {
    draw_all(arms, n, &rng, theta);
    size_t best = 0;
    for (size_t i = 1; i < n; i++) {
      if (theta[i] > theta[best]) {
        best = i;
      }
    }
    wins[best]++;
  }
  for (size_t i = 0; i < n; i++) {
    p_best[i] = (double)wins[i] / (double)draws;
  }
  return HS_OK;
}
