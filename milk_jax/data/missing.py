"""Missing modalities: which item misses what, imputation and normalisation.

Settings (spec, "Protocol"), each applied on top of the declared mask (the
modalities a dataset says an item has; all of them unless it says otherwise):
- given: the declared mask only; ftft: the same (no simulated missingness).
- ftmt: round(test_missing_rate * num_new) new items each miss one modality,
  chosen uniformly; warm items complete.
- mtmt: as ftmt, and round(train_missing_rate * num_warm) warm items each miss
  one modality.
- groups: new items fall into groups by `group_fractions`: group g misses a
  uniformly random set of g modalities; warm items complete.
- stratified: DGMRec's masks (its data/preprocess_missing_modality.py), new and
  warm items alike: see `stratified_mask`.
Counts are rounded half up (stratified's are floored, as in the original). New
and warm items draw from separate generators, so the new-item mask of mtmt
equals that of ftmt under the same seed, and the two settings differ only in
training-time missingness.

Simulated draws pick only among an item's declared-present modalities, and an
item never loses its last one: a draw that would remove every modality an
item has left is skipped (the item keeps its declared mask), so the counts
above are upper bounds when the dataset declares missingness of its own.
With nothing declared, draws and counts are exactly those above. stratified is
the exception: as in the original, some of its items lose every modality
(half of its missing items with M = 2; imputation fills them), and its
patterns are ANDed with the declared mask as drawn.
"""

import dataclasses
import itertools
from typing import Mapping, Sequence

import numpy as np

SETTINGS = ('given', 'ftft', 'ftmt', 'mtmt', 'groups', 'stratified')
IMPUTATIONS = ('mean', 'zero', 'learned')


def round_half_up(x: float) -> int:
  """round() without banker's rounding, so 0.5 * 7 -> 4 on every platform."""
  return int(np.floor(x + 0.5))


def random_subset_mask(rng: np.random.Generator, num_missing: np.ndarray, num_modalities: int,
                       declared: np.ndarray | None = None) -> np.ndarray:
  """Availability rows where row r lacks a uniform random set of num_missing[r] modalities.

  The ranks of i.i.d. uniforms are a uniform random permutation, so the
  modalities ranked below k form a uniform k-subset, for all rows at once.
  Modalities absent from `declared` rank last, so the subset is drawn among
  the present ones only; the same uniforms are drawn either way, so an
  all-present `declared` gives exactly the mask of `declared=None`.

  Args:
    num_missing: (rows,) int in [0, present modalities of the row].
    declared: (rows, num_modalities) bool, True = present before the draw;
      None = all present.
  Returns:
    (rows, num_modalities) bool, True = present.
  """
  keys = rng.random((len(num_missing), num_modalities))
  if declared is None:
    declared = np.ones(keys.shape, bool)
  ranks = np.argsort(np.argsort(np.where(declared, keys, np.inf), axis=1), axis=1)
  return declared & (ranks >= np.asarray(num_missing)[:, None])


def keep_last_modality(num_missing: np.ndarray, declared: np.ndarray) -> np.ndarray:
  """num_missing with 0 on rows where it would remove every present modality.

  A simulated item never ends with no modality at all (nothing would
  represent it); such a draw is skipped and the item keeps its declared mask.

  Args:
    num_missing: (rows,) int; declared: (rows, M) bool.
  Returns:
    (rows,) int.
  """
  return np.where(np.asarray(num_missing) < declared.sum(axis=1), num_missing, 0)


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


def stratified_patterns(num_modalities: int) -> np.ndarray:
  """The availability of DGMRec's chunks of missing items: (2^M - 2 + M, M) bool.

  One chunk per proper non-empty set of missing modalities, sets by size,
  then in itertools.combinations order of the modality indices, then M
  chunks that miss every modality. The original has M = 2: its quarters miss
  text, image, both, both (modalities (text, image) give that order);
  its shipped TikTok masks (M = 3) have the 6 partial sets t, v, a, tv, ta,
  va at 1/9 each and all three at 3/9, which this rule also gives.
  """
  patterns = []
  for size in range(1, num_modalities):
    for lost in itertools.combinations(range(num_modalities), size):
      row = np.ones(num_modalities, bool)
      row[list(lost)] = False
      patterns.append(row)
  patterns += [np.zeros(num_modalities, bool)] * num_modalities
  return np.array(patterns)


def chunk_bounds(num_rows: int, num_chunks: int) -> np.ndarray:
  """(num_chunks + 1,) int: the cut of `num_rows` rows into near-equal chunks.

  Bound i is int(i * (num_rows / num_chunks)), the original's float
  arithmetic; the last bound is num_rows (the original asserts that).
  """
  width = num_rows / num_chunks
  bounds = np.array([int(i * width) for i in range(num_chunks + 1)], np.int64)
  bounds[-1] = num_rows
  return bounds


def stratified_mask(rng: np.random.Generator, strata: np.ndarray, missing_rate: float,
                num_modalities: int) -> np.ndarray:
  """DGMRec's missing-modality mask of some rows, drawn stratum by stratum.

  In each stratum (ascending labels) of n rows, floor(missing_rate * n) rows
  are drawn uniformly without replacement and, in the drawn order, cut by
  `chunk_bounds` into the chunks of `stratified_patterns`: with M = 2, a quarter
  misses image only, a quarter text only and half of them both. The
  original's strata are new/old x cold/warm; here a call per new and per
  warm items, strata = popularity groups.

  Args:
    strata: (rows,) int or bool stratum label of each row.
  Returns:
    (rows, num_modalities) bool, True = present.
  """
  patterns = stratified_patterns(num_modalities)
  available = np.ones((len(strata), num_modalities), bool)
  for label in np.unique(strata):
    members = np.flatnonzero(strata == label)
    drawn = rng.choice(members, int(np.floor(missing_rate * members.size)), replace=False)
    bounds = chunk_bounds(drawn.size, len(patterns))
    for pattern, start, stop in zip(patterns, bounds[:-1], bounds[1:]):
      available[drawn[start:stop]] = pattern
  return available


def availability_mask(setting: str, warm_items: np.ndarray, new_items: np.ndarray,
                      num_modalities: int, test_missing_rate: float,
                      train_missing_rate: float, group_fractions: Sequence[float],
                      warm_rng: np.random.Generator,
                      new_rng: np.random.Generator,
                      declared: np.ndarray | None = None,
                      popular: np.ndarray | None = None,
                      stratified_missing_rate: float = 0.0) -> np.ndarray:
  """The availability mask A of all items under a missing-modality setting.

  Args:
    warm_items, new_items: disjoint int item ids covering all items.
    declared: (num_items, num_modalities) bool, the modalities the dataset
      says each item has (each row with at least one True); None = all.
    popular: (num_items,) bool popularity group, stratified's strata (needed there).
    stratified_missing_rate: stratified: share of each stratum that misses modalities.
  Returns:
    (num_items, num_modalities) bool, True = present: `declared` with the
    setting's simulated losses on top. For warm items it is the
    training-time mask, for new items the test-time mask.
  """
  num_items = len(warm_items) + len(new_items)
  if declared is None:
    declared = np.ones((num_items, num_modalities), bool)
  available = np.array(declared, bool)
  if setting == 'stratified':
    for items, rng in ((new_items, new_rng), (warm_items, warm_rng)):
      available[items] &= stratified_mask(rng, popular[items], stratified_missing_rate,
                                          num_modalities)
    return available
  if setting == 'groups':
    new_counts = group_counts(new_rng, len(new_items), group_fractions)
  elif setting in ('ftmt', 'mtmt'):
    new_counts = one_missing_counts(new_rng, len(new_items), test_missing_rate)
  else:
    new_counts = np.zeros(len(new_items), np.int64)
  new_declared = available[new_items]
  available[new_items] = random_subset_mask(
      new_rng, keep_last_modality(new_counts, new_declared), num_modalities, new_declared)
  if setting == 'mtmt':
    warm_counts = one_missing_counts(warm_rng, len(warm_items), train_missing_rate)
    warm_declared = available[warm_items]
    available[warm_items] = random_subset_mask(
        warm_rng, keep_last_modality(warm_counts, warm_declared), num_modalities, warm_declared)
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


@dataclasses.dataclass(frozen=True, eq=False)
class Imputation:
  """What fills a missing modality, fitted on the warm items.

  A run saves it (milk_jax/serving.py), so that items arriving after
  training are filled exactly as the training catalogue's items were.
  """
  method: str  # mean | zero | learned.
  fills: tuple[np.ndarray, ...]  # M (dim_m,) float32: the fit rows' mean, or zeros.
  # learned: (target, source) -> ridge map (weights (dim_source, dim_target), bias), float64.
  maps: Mapping[tuple[int, int], tuple[np.ndarray, np.ndarray]] = dataclasses.field(
      default_factory=dict)


def fit_imputation(features: Sequence[np.ndarray], available: np.ndarray, method: str,
                   fit_rows: np.ndarray | None = None, ridge: float = 1.0) -> Imputation:
  """Fits the fills (and, for 'learned', the ridge maps) on `fit_rows`; see `impute`."""
  fit_rows = np.arange(len(available)) if fit_rows is None else np.asarray(fit_rows)
  fills, maps = [], {}
  for target, x in enumerate(features):
    x = np.asarray(x, np.float32)
    mean_rows = fit_rows[available[fit_rows, target]]
    if method != 'zero' and mean_rows.size:
      fills.append(x[mean_rows].mean(axis=0, dtype=np.float64).astype(np.float32))
    else:  # 'zero', or a modality present on no fit row.
      fills.append(np.zeros(x.shape[1], np.float32))
    if method != 'learned':
      continue
    for source, x_source in enumerate(features):
      pair_rows = fit_rows[available[fit_rows, source] & available[fit_rows, target]]
      if source != target and len(pair_rows):
        maps[(target, source)] = ridge_map(x_source[pair_rows], x[pair_rows], ridge)
  return Imputation(method=method, fills=tuple(fills), maps=maps)


def learned_fill(imputation: Imputation, features: Sequence[np.ndarray], available: np.ndarray,
                 target: int) -> np.ndarray | None:
  """Predictions of modality `target` for the rows that miss it, from their present ones.

  A row's prediction is the mean over its present modalities p of the ridge
  map p -> target (fitted on the fit rows where both p and target are present).

  Returns:
    (rows missing target, dim_target) float32, or None when some missing row
    has no fitted map to predict it (no present modality with training pairs).
  """
  missing_rows = np.flatnonzero(~available[:, target])
  total = np.zeros((len(missing_rows), imputation.fills[target].shape[0]))
  count = np.zeros(len(missing_rows))
  for source, x in enumerate(features):
    if (target, source) not in imputation.maps:
      continue
    weights, bias = imputation.maps[(target, source)]
    use = available[missing_rows, source]
    total[use] += x[missing_rows[use]] @ weights + bias
    count[use] += 1
  if (count == 0).any():
    return None
  return (total / count[:, None]).astype(np.float32)


def apply_imputation(imputation: Imputation, features: Sequence[np.ndarray],
                     available: np.ndarray) -> tuple[np.ndarray, ...]:
  """Replaces the rows of missing modalities with `imputation`'s fills; see `impute`."""
  filled = []
  for m, x in enumerate(features):
    x = np.array(x, dtype=np.float32)
    fill = None
    if imputation.method == 'learned':
      fill = learned_fill(imputation, features, available, m)
    x[~available[:, m]] = imputation.fills[m] if fill is None else fill
    filled.append(x)
  return tuple(filled)


def impute(features: Sequence[np.ndarray], available: np.ndarray, method: str,
           fit_rows: np.ndarray | None = None, ridge: float = 1.0) -> tuple[np.ndarray, ...]:
  """Replaces the rows of missing modalities.

  Everything is fitted on `fit_rows` (the warm items: only they stand for
  training data, and new items must not shape the features they are ranked
  by): 'mean' fills with the mean of that modality over the fit rows where it
  is present; 'zero' fills with zeros; 'learned' predicts the missing
  modality from the item's present ones with ridge maps, see `learned_fill`,
  and falls back to the mean where no map applies. A modality present on no
  fit row is filled with zeros. Rows of missing modalities are never read.

  Args:
    features: M arrays (num_items, dim_m).
    available: (num_items, M) bool.
    fit_rows: int item ids everything is fitted on; None = all items.
    ridge: L2 penalty of the learned maps.
  Returns:
    M new float32 arrays (num_items, dim_m); the inputs are not modified.
  """
  imputation = fit_imputation(features, available, method, fit_rows, ridge)
  return apply_imputation(imputation, features, available)


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
