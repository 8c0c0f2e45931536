/* Learning which content works: the pure arithmetic behind visit:suggest and the content stats
 * (SPEC §3, §4). Nothing here allocates, does I/O or keeps state between calls: every random
 * draw comes from a generator the caller seeds, so the same inputs give the same answer on
 * every node, in every replay and in every test.
 *
 * The model: each item of a slot converts with an unknown rate whose belief is a Beta(alpha,
 * beta) posterior, alpha = 1 + prior successes + successes and beta = 1 + prior failures +
 * failures. visit:suggest picks by Thompson sampling (draw a rate from every posterior and show
 * the highest), mixed with a uniform pick with probability `floor`, so every item keeps being
 * tried however far behind it falls: an exploration floor of floor/n per item. */
#ifndef HS_LEARN_LEARN_H
#define HS_LEARN_LEARN_H

#include <stddef.h>
#include <stdint.h>

/* Items one pick may choose among; more are refused by visit:suggest. */
enum { HS_LEARN_MAX_ARMS = 64 };

/* The share of picks made uniformly at random (the exploration floor). */
#define HS_LEARN_FLOOR 0.05

/* Draws the Monte Carlo estimates below use: enough for a propensity within about 0.02, fixed so
 * the estimates are deterministic. A propensity uses about HS_LEARN_DRAWS / n draws per item. */
enum { HS_LEARN_DRAWS = 2000 };

/* A generator (splitmix64): *state advances; any seed is fine, 0 included. */
uint64_t hs_learn_next(uint64_t *state);
/* Uniform in (0, 1), never 0 or 1. */
double hs_learn_uniform(uint64_t *state);
/* Standard normal. */
double hs_learn_normal(uint64_t *state);
/* Gamma(shape, 1) for shape > 0 (Marsaglia and Tsang). */
double hs_learn_gamma(uint64_t *state, double shape);
/* Beta(a, b) for a, b > 0, as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b). */
double hs_learn_beta(uint64_t *state, double a, double b);

/* One item's belief. */
typedef struct hs_arm {
  double alpha; /* 1 + prior successes + successes */
  double beta;  /* 1 + prior failures + failures */
} hs_arm_t;

/* The posterior of an item shown `shown` times with `successes` of them successful, with a
 * prior of prior_s successes and prior_f failures (pseudo-counts, >= 0). */
hs_arm_t hs_learn_arm(double prior_s, double prior_f, uint64_t shown, uint64_t successes);

/* Picks count distinct items of arms[0..n) (1 <= count <= n <= HS_LEARN_MAX_ARMS): with
 * probability floor a uniform subset, otherwise the count highest of one Thompson draw per
 * item. Writes the chosen indices to picks[0..count) (best first) and, to propensity[0..count),
 * the probability each had of being among the picks (estimated with HS_LEARN_DRAWS draws), which
 * is what an offline evaluation of another policy weighs the outcome by. Every draw comes from
 * generators derived from seed. Returns 0, or HS_EINVAL for counts out of range. */
int hs_learn_pick(const hs_arm_t *arms, size_t n, size_t count, double floor, uint64_t seed,
                  size_t *picks, double *propensity);

/* The Wilson score interval (95%) of a rate from successes of shown; [0, 1] when shown is 0. */
void hs_learn_interval(uint64_t successes, uint64_t shown, double *lo, double *hi);

/* For each item, the chance that its rate is the highest of the n (estimated with draws draws
 * seeded with seed), written to p_best[0..n). Returns 0, or HS_EINVAL when n is out of range. */
int hs_learn_p_best(const hs_arm_t *arms, size_t n, uint64_t seed, unsigned draws, double *p_best);

#endif
