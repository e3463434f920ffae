"""Shared test setup: fast CPU compilation."""

import jax

# Tests run tiny programs; skipping XLA's heavy optimisation passes makes them compile faster.
jax.config.update('jax_disable_most_optimizations', True)
