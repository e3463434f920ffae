"""Missing modalities: which item misses what, imputation and normalisation.

Settings (spec, "Protocol"):
- ftft: every modality of every item present.
- ftmt: round(test_missing_rate * num_new) new items each miss one modality,
  chosen uniformly; warm items complete.
- mtmt: as ftmt, and round(train_missing_rate * num_warm) warm items each miss
  one modality.
- groups: new items fall into groups by `group_fractions`: group g misses a
  uniformly random set of g modalities; warm items complete.
Counts are rounded half up. New and warm items draw from separate generators,
so the new-item mask of mtmt equals that of ftmt under the same seed, and
the two settings differ only in training-time missingness.
"""

from typing import Sequence

import numpy as np

SETTINGS = ('ftft', 'ftmt', 'mtmt', 'groups')
IMPUTATIONS = ('mean', 'zero', 'learned')


def round_half_up(x: float) -> int:
  """round() without banker's rounding, so 0.5 * 7 -> 4 on every platform."""
  return int(np.floor(x + 0.5))


def random_subset_mask(rng: np.random.Generator, num_missing: np.ndarray,
                       num_modalities: int) -> np.ndarray:
  """Availability rows where row r lacks a uniform random set of num_missing[r] modalities.

  The ranks of i.i.d. uniforms are a uniform random permutation, so the
  modalities ranked below k form a uniform k-subset, for all rows at once.

  Args:
    num_missing: (rows,) int in [0, num_modalities].
  Returns:
    (rows, num_modalities) bool, True = present.
  """
  keys = rng.random((len(num_missing), num_modalities))
  ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
  return ranks >= np.asarray(num_missing)[:, None]


def one_missing_counts(rng: np.random.Generator, num_rows: int, rate: float) -> np.ndarray:
  """(num_rows,) int: 1 on round(rate * num_rows) rows chosen uniformly, else 0."""
  counts = np.zeros(num_rows, np.int64)
  counts[rng.choice(num_rows, round_half_up(rate * num_rows), replace=False)] = 1
  return counts


def group_counts(rng: np.random.Generator, num_rows: int,
                 group_fractions: Sequence[float]) -> np.ndarray:
  """(num_rows,) int: the number of missing modalities, g for a row of group g.

  Group sizes come from rounding the cumulative fractions, so they always
  add up to num_rows; rows are assigned to groups by a random permutation.
  """
  bounds = [round_half_up(c * num_rows) for c in np.cumsum(group_fractions)]
  sizes = np.diff([0] + bounds)
  sizes[-1] = num_rows - sum(sizes[:-1])  # Absorbs the 1e-6 slack allowed in the sum.
  counts = np.repeat(np.arange(len(sizes)), sizes)
  return counts[rng.permutation(num_rows)]


def availability_mask(setting: str, warm_items: np.ndarray, new_items: np.ndarray,
                      num_modalities: int, test_missing_rate: float,
                      train_missing_rate: float, group_fractions: Sequence[float],
                      warm_rng: np.random.Generator,
                      new_rng: np.random.Generator) -> np.ndarray:
  """The availability mask A of all items under a missing-modality setting.

  Args:
    warm_items, new_items: disjoint int item ids covering all items.
  Returns:
    (num_items, num_modalities) bool, True = present. For warm items it is
    the training-time mask, for new items the test-time mask.
  """
  num_items = len(warm_items) + len(new_items)
  available = np.ones((num_items, num_modalities), bool)
  if setting == 'groups':
    new_counts = group_counts(new_rng, len(new_items), group_fractions)
  elif setting in ('ftmt', 'mtmt'):
    new_counts = one_missing_counts(new_rng, len(new_items), test_missing_rate)
  else:
    new_counts = np.zeros(len(new_items), np.int64)
  available[new_items] = random_subset_mask(new_rng, new_counts, num_modalities)
  if setting == 'mtmt':
    warm_counts = one_missing_counts(warm_rng, len(warm_items), train_missing_rate)
    available[warm_items] = random_subset_mask(warm_rng, warm_counts, num_modalities)
  return available


def ridge_map(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
  """Closed-form ridge regression y ~ x @ weights + bias, the bias unpenalised.

  Args:
    x: (rows, dim_in), y: (rows, dim_out), rows >= 1.
  Returns:
    weights (dim_in, dim_out) and bias (dim_out,), float64.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
  xc = x - x_mean
  gram = xc.T @ xc + ridge * np.eye(x.shape[1])
  weights = np.linalg.solve(gram, xc.T @ (y - y_mean))
  return weights, y_mean - x_mean @ weights


def learned_fill(features: Sequence[np.ndarray], available: np.ndarray, fit_rows: np.ndarray,
                 target: int, ridge: float) -> np.ndarray | None:
  """Predictions of modality `target` for the rows that miss it, from their present ones.

  One ridge map per present modality p, fit on the `fit_rows` where both p
  and `target` are present; a row's prediction is the mean over its present
  modalities of their maps' outputs.

  Returns:
    (rows missing target, dim_target) float32, or None when some missing row
    has no fitted map to predict it (no present modality with training pairs).
  """
  missing_rows = np.flatnonzero(~available[:, target])
  total = np.zeros((len(missing_rows), features[target].shape[1]))
  count = np.zeros(len(missing_rows))
  for p, x in enumerate(features):
    pair_rows = fit_rows[available[fit_rows, p] & available[fit_rows, target]]
    if p == target or len(pair_rows) == 0:
      continue
    weights, bias = ridge_map(x[pair_rows], features[target][pair_rows], ridge)
    use = available[missing_rows, p]
    total[use] += x[missing_rows[use]] @ weights + bias
    count[use] += 1
  if (count == 0).any():
    return None
  return (total / count[:, None]).astype(np.float32)


def impute(features: Sequence[np.ndarray], available: np.ndarray, method: str,
           fit_rows: np.ndarray | None = None, ridge: float = 1.0) -> tuple[np.ndarray, ...]:
  """Replaces the rows of missing modalities.

  'mean' fills with the mean of that modality over the items where it is
  present (all items, warm and new: features are content, known for every
  item); 'zero' fills with zeros; 'learned' predicts the missing modality
  from the item's present ones with ridge maps fit on `fit_rows` (the warm
  items: only they stand for training data), see `learned_fill`, and falls
  back to the mean where no map applies.

  Args:
    features: M arrays (num_items, dim_m).
    available: (num_items, M) bool.
    fit_rows: int item ids the learned maps are fit on; None = all items.
    ridge: L2 penalty of the learned maps.
  Returns:
    M new float32 arrays (num_items, dim_m); the inputs are not modified.
  """
  if fit_rows is None:
    fit_rows = np.arange(len(available))
  filled = []
  for m, x in enumerate(features):
    x = np.array(x, dtype=np.float32)
    present = available[:, m]
    fill = None
    if method == 'learned':
      fill = learned_fill(features, available, np.asarray(fit_rows), m, ridge)
    if fill is None and method != 'zero' and present.any():
      fill = x[present].mean(axis=0, dtype=np.float64).astype(np.float32)
    x[~present] = 0.0 if fill is None else fill
    filled.append(x)
  return tuple(filled)


def l2_normalize(x: np.ndarray) -> np.ndarray:
  """(rows, dim) -> float32 rows of unit L2 norm; all-zero rows stay zero.

  Rows whose float32 sum of squares would overflow or lose precision (values
  around 1e30 or 1e-31) are first divided by their largest |value|, in
  float64, so that no magnitude zeroes a row. Other rows take the plain
  float32 path, which keeps earlier runs' features bit for bit.
  """
  x = np.asarray(x, np.float32)
  with np.errstate(over='ignore', under='ignore'):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
  out = x / np.where(norms > 0, norms, 1)
  extreme = ~((norms[:, 0] > 1e-15) & (norms[:, 0] < 1e15)) & x.any(axis=1)
  if extreme.any():
    rows = x[extreme].astype(np.float64)
    rows /= np.abs(rows).max(axis=1, keepdims=True)
    out[extreme] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
  return out.astype(np.float32, copy=False)
