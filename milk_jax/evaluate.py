"""New-item ranking metrics: Recall, NDCG, Precision and HR at K.

Every evaluated user ranks the candidate new items by inner product; the
top-k is taken on device in user batches of a fixed size, so one compiled
program serves every batch of a split.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

METRIC_NAMES = ('recall', 'ndcg', 'precision', 'hr')


def metric_keys(ks: Sequence[int]) -> list[str]:
  """Names of the metrics `rank_metrics` returns, e.g. 'recall@20'."""
  return [f'{name}@{k}' for name in METRIC_NAMES for k in ks]


Sums = dict[str, jax.Array]


def _ranking_sums(user_vectors: jax.Array, candidate_vectors: jax.Array,
                  relevant: jax.Array, user_mask: jax.Array,
                  ks: tuple[int, ...]) -> tuple[Sums, jax.Array]:
  """Metric sums over the valid users of one batch, and the batch's ranking.

  Args:
    user_vectors: (U, d).
    candidate_vectors: (C, d).
    relevant: (U, C) bool, True where the candidate is a held-out positive.
    user_mask: (U,) bool, False on padding rows.
    ks: cut-offs (static).
  Returns:
    ({'recall@k': sum over valid users, ...}, top (U, min(max(ks), C))
    candidate columns, best first), the top for `rank_metrics_and_groups`.
  """
  return _score_sums(user_vectors @ candidate_vectors.T, relevant, user_mask, ks)


def _calibrated_ranking_sums(user_vectors: jax.Array, candidate_vectors: jax.Array,
                             scale: jax.Array, offset: jax.Array, relevant: jax.Array,
                             user_mask: jax.Array, ks: tuple[int, ...]
                             ) -> tuple[Sums, jax.Array]:
  """`_ranking_sums` of calibrated scores scale * (user . item) + offset; scale, offset (C,)."""
  scores = (user_vectors @ candidate_vectors.T) * scale[None, :] + offset[None, :]
  return _score_sums(scores, relevant, user_mask, ks)


def _score_sums(scores: jax.Array, relevant: jax.Array, user_mask: jax.Array,
                ks: tuple[int, ...]) -> tuple[Sums, jax.Array]:
  """Metric sums of a (U, C) score matrix over the valid users, and its top (see
  `_ranking_sums`)."""
  depth = min(max(ks), scores.shape[1])
  _, top = jax.lax.top_k(scores, depth)
  return _top_sums(top, relevant, user_mask, ks), top


def _top_sums(top: jax.Array, relevant: jax.Array, user_mask: jax.Array,
              ks: tuple[int, ...]) -> Sums:
  """Metric sums of a ranking given as its top (U, depth) candidate columns (see
  `_ranking_sums`); cut-offs above depth count the top only."""
  depth = top.shape[1]
  hits = jnp.take_along_axis(relevant, top, axis=1).astype(jnp.float32)  # (U, depth)
  num_relevant = relevant.sum(axis=1).astype(jnp.float32)
  discounts = 1.0 / jnp.log2(jnp.arange(2, depth + 2, dtype=jnp.float32))
  cumulative_discounts = jnp.cumsum(discounts)
  valid = user_mask & (num_relevant > 0)
  weight = valid.astype(jnp.float32)
  safe_relevant = jnp.maximum(num_relevant, 1.0)
  sums = {}
  for k in ks:
    kk = min(k, depth)
    hits_k = hits[:, :kk].sum(axis=1)
    dcg = (hits[:, :kk] * discounts[:kk]).sum(axis=1)
    ideal_count = jnp.clip(jnp.minimum(num_relevant, kk), 1, kk).astype(jnp.int32)
    idcg = cumulative_discounts[ideal_count - 1]
    sums[f'recall@{k}'] = jnp.sum(weight * hits_k / safe_relevant)
    sums[f'ndcg@{k}'] = jnp.sum(weight * dcg / idcg)
    sums[f'precision@{k}'] = jnp.sum(weight * hits_k / k)
    sums[f'hr@{k}'] = jnp.sum(weight * (hits_k > 0))
  return sums


_ranking_sums_jit = jax.jit(_ranking_sums, static_argnames=('ks',))
_calibrated_ranking_sums_jit = jax.jit(_calibrated_ranking_sums, static_argnames=('ks',))
_top_sums_jit = jax.jit(_top_sums, static_argnames=('ks',))


# Per-item score maps (scale (num_items,), offset (num_items,)): the ranking uses
# scale[i] * (user . item i) + offset[i] (milk_jax/calibration.py fits them).
ItemMaps = tuple[np.ndarray, np.ndarray]


def rank_metrics(user_embedding: jax.Array, item_vectors: jax.Array,
                 pairs: np.ndarray, candidates: np.ndarray, ks: Sequence[int],
                 user_batch_size: int = 1024, item_maps: ItemMaps | None = None
                 ) -> dict[str, float]:
  """Mean metrics over the users that have at least one held-out candidate.

  Args:
    user_embedding: (num_users, d) on device.
    item_vectors: (num_items, d) inference item vectors on device.
    pairs: (n, 2) held-out (user, item); items outside `candidates` are ignored.
    candidates: (C,) item ids every user ranks.
    ks: cut-offs.
    user_batch_size: users per device call (the last batch is padded).
    item_maps: calibrated scores; None ranks the plain inner products (the
      uncalibrated program, unchanged).
  Returns:
    {'recall@k': ..., 'ndcg@k': ..., 'precision@k': ..., 'hr@k': ...,
     'num_users': int}; metrics are 0.0 when no user qualifies.
  """
  return _ranked(user_embedding, item_vectors, pairs, candidates, ks, user_batch_size,
                 item_maps)[0]


class _HeldOut:
  """Held-out pairs among the candidates: the users they name and each pair's relevant cell."""

  def __init__(self, pairs: np.ndarray, column: np.ndarray):
    """pairs (n, 2) (user, item); column (num_items,) candidate column of each item, -1 off."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    pairs = pairs[column[pairs[:, 1]] >= 0]
    self.users, self.user_rows = np.unique(pairs[:, 0], return_inverse=True)
    self.columns = column[pairs[:, 1]]

  def batches(self, batch: int, num_candidates: int):
    """(start, batch users (padding repeats real users), relevant (batch, C), mask) per batch."""
    for start in range(0, self.users.size, batch):
      stop = min(start + batch, self.users.size)
      relevant = np.zeros((batch, num_candidates), bool)
      in_batch = (self.user_rows >= start) & (self.user_rows < stop)
      relevant[self.user_rows[in_batch] - start, self.columns[in_batch]] = True
      batch_users = np.resize(self.users[start:stop], batch)  # padding repeats real users...
      mask = np.arange(batch) < stop - start  # ...and is masked out here.
      yield start, batch_users, relevant, mask


def _candidate_columns(num_items: int, candidates: np.ndarray) -> np.ndarray:
  """(num_items,) each item's column among `candidates`, -1 for the others."""
  column = np.full(num_items, -1, np.int64)
  column[candidates] = np.arange(candidates.size)
  return column


def _means(totals: dict[str, float], num_users: int) -> dict[str, float]:
  """Sums over users -> means, with 'num_users'."""
  result = {key: value / num_users for key, value in totals.items()}
  result['num_users'] = int(num_users)
  return result


def _ranked(user_embedding: jax.Array, item_vectors: jax.Array, pairs: np.ndarray,
            candidates: np.ndarray, ks: Sequence[int], user_batch_size: int,
            item_maps: ItemMaps | None, keep_top: bool = False
            ) -> tuple[dict[str, float], _HeldOut | None, np.ndarray | None, int]:
  """`rank_metrics`' result; with keep_top also its held-out pairs, every user's top
  (users, depth) candidate columns (rows in the order of held_out.users) and the batch size."""
  ks = tuple(int(k) for k in ks)
  candidates = np.asarray(candidates, np.int64)
  held_out = _HeldOut(pairs, _candidate_columns(item_vectors.shape[0], candidates))
  totals = {key: 0.0 for key in metric_keys(ks)}
  if held_out.users.size == 0 or candidates.size == 0:
    return {**totals, 'num_users': 0}, None, None, 0

  candidate_vectors = item_vectors[jnp.asarray(candidates)]
  if item_maps is not None:
    scale, offset = (jnp.asarray(np.asarray(m, np.float32)[candidates]) for m in item_maps)
  batch = min(user_batch_size, held_out.users.size)
  tops = []
  for start, batch_users, relevant, mask in held_out.batches(batch, candidates.size):
    batch_vectors = user_embedding[jnp.asarray(batch_users)]
    if item_maps is None:
      sums, top = _ranking_sums_jit(batch_vectors, candidate_vectors, jnp.asarray(relevant),
                                    jnp.asarray(mask), ks)
    else:
      sums, top = _calibrated_ranking_sums_jit(batch_vectors, candidate_vectors, scale, offset,
                                               jnp.asarray(relevant), jnp.asarray(mask), ks)
    for key, value in jax.device_get(sums).items():
      totals[key] += float(value)
    if keep_top:
      tops.append(np.asarray(top)[:min(batch, held_out.users.size - start)])
  result = _means(totals, held_out.users.size)
  if not keep_top:
    return result, None, None, batch
  return result, held_out, np.concatenate(tops), batch


def group_name(num_missing: int) -> str:
  """'full' for complete items, 'missing_g' for items missing g modalities."""
  return 'full' if num_missing == 0 else f'missing_{num_missing}'


def rank_metrics_and_groups(user_embedding: jax.Array, item_vectors: jax.Array,
                            pairs: np.ndarray, candidates: np.ndarray,
                            num_missing: np.ndarray, ks: Sequence[int],
                            user_batch_size: int = 1024, item_maps: ItemMaps | None = None
                            ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """(`rank_metrics`, `rank_metrics_by_group`) of the same arguments from one ranking.

  Every group ranks the same candidates, so a user's top over them is the same
  whichever group counts its hits: the candidates are ranked once per user
  batch of the plain metrics (which hold every user of every group), and each
  group then sums its hits over its own users in the batches a ranking of its
  own would use (same users, order and padding, same summing program), so
  every number equals that of a ranking per group to the last bit. A group
  with fewer users than one batch would score them in a batch of another
  shape, whose matrix product may round differently (XLA:CPU's does for a
  single row): such a group, cheap, is ranked on its own.
  """
  ks = tuple(int(k) for k in ks)
  pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
  candidates = np.asarray(candidates, np.int64)
  plain, held_out, top, batch = _ranked(user_embedding, item_vectors, pairs, candidates, ks,
                                        user_batch_size, item_maps, keep_top=True)
  column = _candidate_columns(item_vectors.shape[0], candidates)
  pair_groups = num_missing[pairs[:, 1]]
  groups = {}
  for g in np.unique(pair_groups):
    group_pairs = pairs[pair_groups == g]
    group = _HeldOut(group_pairs, column)
    if held_out is None or min(user_batch_size, group.users.size) != batch:
      groups[group_name(int(g))] = rank_metrics(user_embedding, item_vectors, group_pairs,
                                                candidates, ks, user_batch_size, item_maps)
      continue
    totals = {key: 0.0 for key in metric_keys(ks)}
    for _, batch_users, relevant, mask in group.batches(batch, candidates.size):
      batch_top = top[np.searchsorted(held_out.users, batch_users)]
      sums = _top_sums_jit(jnp.asarray(batch_top), jnp.asarray(relevant), jnp.asarray(mask), ks)
      for key, value in jax.device_get(sums).items():
        totals[key] += float(value)
    groups[group_name(int(g))] = _means(totals, group.users.size)
  return plain, groups


def rank_metrics_by_group(user_embedding: jax.Array, item_vectors: jax.Array,
                          pairs: np.ndarray, candidates: np.ndarray,
                          num_missing: np.ndarray, ks: Sequence[int],
                          user_batch_size: int = 1024, item_maps: ItemMaps | None = None
                          ) -> dict[str, dict[str, float]]:
  """Metrics per missing-modality group of the held-out items, in one shared ranking.

  Every group uses the same ranking of all `candidates`; only the held-out
  positives are restricted to the group's items (a user counts in a group
  when one of its held-out items is there). Groups of different sizes thus
  face the same competition, and a group's number also says how its items'
  scores sit against the other groups' (see `rank_metrics_within_group`).
  The candidates are ranked once for all groups (`rank_metrics_and_groups`).

  Args:
    num_missing: (num_items,) missing modalities per item.
    Others as in `rank_metrics`.
  Returns:
    {'full': {...}, 'missing_1': {...}, ...} for the groups present among the
    held-out items.
  """
  return rank_metrics_and_groups(user_embedding, item_vectors, pairs, candidates, num_missing,
                                 ks, user_batch_size, item_maps)[1]


def rank_metrics_within_group(user_embedding: jax.Array, item_vectors: jax.Array,
                              pairs: np.ndarray, candidates: np.ndarray,
                              num_missing: np.ndarray, ks: Sequence[int],
                              user_batch_size: int = 1024, item_maps: ItemMaps | None = None
                              ) -> dict[str, dict[str, float]]:
  """Metrics per missing-modality group, each group's users ranking only its candidates.

  Candidates and held-out positives are both restricted to the group's items,
  so a group's number does not depend on how its scores sit against other
  groups' (calibration): it measures how well the group's items are ordered.
  Arguments and result as in `rank_metrics_by_group`.
  """
  pairs = np.asarray(pairs).reshape(-1, 2)
  candidates = np.asarray(candidates, np.int64)
  pair_groups = num_missing[pairs[:, 1]]
  return {group_name(int(g)): rank_metrics(
      user_embedding, item_vectors, pairs[pair_groups == g],
      candidates[num_missing[candidates] == g], ks, user_batch_size, item_maps)
          for g in np.unique(pair_groups)}


def candidate_items(dataset, split: str, candidates: str) -> np.ndarray:
  """The new items a user of `split` ranks: all new items, or the split's own."""
  if candidates == 'all_new':
    return np.union1d(dataset.val_items, dataset.test_items)
  return dataset.val_items if split == 'val' else dataset.test_items


def evaluate_split(eval_config, user_vectors: jax.Array, item_vectors: jax.Array, dataset,
                   split: str, by_group: bool = False, within_group: bool = False,
                   item_maps: ItemMaps | None = None) -> dict:
  """Ranking metrics of `split` ('val' or 'test') from a method's vectors.

  by_group: per missing group in one shared ranking; within_group: per group,
  each ranking its own items only. The evaluator sees vectors only, never
  parameters or the method.
  """
  pairs = dataset.val_pairs if split == 'val' else dataset.test_pairs
  candidates = candidate_items(dataset, split, eval_config.candidates)
  if by_group or within_group:
    grouped = rank_metrics_within_group if within_group else rank_metrics_by_group
    return grouped(user_vectors, item_vectors, pairs, candidates, dataset.num_missing,
                   eval_config.ks, eval_config.user_batch_size, item_maps)
  return rank_metrics(user_vectors, item_vectors, pairs, candidates, eval_config.ks,
                      eval_config.user_batch_size, item_maps)


def held_out_metrics(eval_config, user_vectors: jax.Array, item_vectors: jax.Array,
                     dataset, item_maps: ItemMaps | None = None) -> dict:
  """What results.json and eval.json report of the test split.

  {'test', 'test_by_group', 'test_within_group'}; with `item_maps` (a fitted
  calibration) these rank calibrated scores, and the same three of the plain
  scores follow as 'test_uncalibrated', 'test_by_group_uncalibrated',
  'test_within_group_uncalibrated'.
  """
  def metrics(maps):
    # 'test' and 'test_by_group' come from one ranking, as evaluate_split's would.
    test, by_group = rank_metrics_and_groups(
        user_vectors, item_vectors, dataset.test_pairs,
        candidate_items(dataset, 'test', eval_config.candidates), dataset.num_missing,
        eval_config.ks, eval_config.user_batch_size, maps)
    return {'test': test, 'test_by_group': by_group,
            'test_within_group': evaluate_split(eval_config, user_vectors, item_vectors,
                                                dataset, 'test', within_group=True,
                                                item_maps=maps)}

  plain = metrics(None)
  if item_maps is None:
    return plain
  return {**metrics(item_maps), **{f'{key}_uncalibrated': value for key, value in plain.items()}}
