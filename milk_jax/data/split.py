"""The new-item split: some items lose all their training interactions.

Protocol (spec, "Protocol"): a random share of the items becomes new; those
are divided into validation and test items. Interactions follow their item,
so every interaction lands in exactly one of train / val / test and no user
trains on a new item. The time split (config.data.split='time') makes the
same share new, but picks the newest items by first interaction time. The
popularity split (config.data.split='popularity') is DGMRec's: the same share
of new items is drawn separately among the less and the more popular items.
"""

from typing import NamedTuple

import numpy as np


class ItemSplit(NamedTuple):
  """Disjoint sorted int32 item ids; together they cover every item."""
  warm_items: np.ndarray  # Items that may have training interactions.
  val_items: np.ndarray  # New items of the validation split.
  test_items: np.ndarray  # New items of the test split.

  @property
  def new_items(self) -> np.ndarray:
    """Sorted int32 union of validation and test items."""
    return np.union1d(self.val_items, self.test_items).astype(np.int32)


def new_item_split(rng: np.random.Generator, num_items: int, new_item_fraction: float,
                   val_fraction: float) -> ItemSplit:
  """Draws floor(new_item_fraction * num_items) new items uniformly.

  Of those, floor(val_fraction * num_new) are validation items and the rest
  test items. Items without any interaction may be drawn too: the split is
  over the catalogue, as in the authors' protocol.
  """
  num_new, num_val = split_sizes(num_items, new_item_fraction, val_fraction)
  order = rng.permutation(num_items)
  return sorted_split(order[num_new:], order[:num_val], order[num_val:num_new])


def time_item_split(first_time: np.ndarray, new_item_fraction: float,
                    val_fraction: float) -> ItemSplit:
  """The newest items by first interaction time are new; the same counts as `new_item_split`.

  Items are ordered by first interaction time, ties by item id (the larger id
  counts as newer). The newest floor(new_item_fraction * I) are new; of those
  the older floor(val_fraction * num_new) are validation items and the
  newest the test items, so validation lies between training and test in
  time. Items never interacted with (NaN) sort before every seen item: they
  stay warm, without training interactions, unless the new share exceeds the
  seen items.

  Args:
    first_time: (I,) float64 each item's first interaction time; NaN = never seen.
  """
  num_items = first_time.shape[0]
  num_new, num_val = split_sizes(num_items, new_item_fraction, val_fraction)
  times = np.where(np.isnan(first_time), -np.inf, first_time)
  order = np.lexsort((np.arange(num_items), times))  # Oldest first.
  num_warm = num_items - num_new
  return sorted_split(order[:num_warm], order[num_warm:num_warm + num_val],
                      order[num_warm + num_val:])


def item_popularity(pairs: np.ndarray, num_items: int) -> np.ndarray:
  """(num_items,) int64: each item's interactions (pairs are unique, so its users)."""
  return np.bincount(np.asarray(pairs)[:, 1].astype(np.int64), minlength=num_items)


def popular_items(popularity: np.ndarray, unpopular_fraction: float) -> np.ndarray:
  """(I,) bool, True = popular: all but the floor(unpopular_fraction * I) least popular items.

  DGMRec's cold / warm item groups (data/preprocess_*.py there: the 70% least
  popular items and the rest). Ties in popularity go by item id, the smaller
  id counting as less popular, so the groups are a function of the counts
  alone (the original sorts with pandas' unstable default sort).

  Args:
    popularity: (I,) interaction counts, e.g. `item_popularity`.
  """
  num_items = popularity.shape[0]
  least_popular_first = np.lexsort((np.arange(num_items), popularity))
  popular = np.ones(num_items, bool)
  popular[least_popular_first[:int(np.floor(unpopular_fraction * num_items))]] = False
  return popular


def popularity_item_split(rng: np.random.Generator, popular: np.ndarray,
                          new_item_fraction: float, val_fraction: float) -> ItemSplit:
  """DGMRec's new items: floor(new_item_fraction * n) drawn uniformly within each group.

  The groups are the unpopular and the popular items (`popular_items`; n is
  the group's size), so both popularity levels are new in the same share.
  Of all new items, floor(val_fraction * num_new) chosen uniformly are
  validation items and the rest test items (DGMRec keeps no new-item
  validation split: its new items' training interactions join the test set).

  Args:
    popular: (I,) bool, True = popular.
  """
  new_items = np.concatenate([
      rng.choice(group, int(np.floor(new_item_fraction * group.size)), replace=False)
      for group in (np.flatnonzero(~popular), np.flatnonzero(popular))])
  new_items = rng.permutation(new_items)
  num_val = int(np.floor(val_fraction * new_items.size))
  warm_items = np.setdiff1d(np.arange(popular.shape[0]), new_items)
  return sorted_split(warm_items, new_items[:num_val], new_items[num_val:])


def split_sizes(num_items: int, new_item_fraction: float, val_fraction: float
                ) -> tuple[int, int]:
  """(new items, validation items): floor(fraction * count) each."""
  num_new = int(np.floor(new_item_fraction * num_items))
  return num_new, int(np.floor(val_fraction * num_new))


def sorted_split(warm_items: np.ndarray, val_items: np.ndarray,
                 test_items: np.ndarray) -> ItemSplit:
  """An ItemSplit of the three item sets, each sorted int32."""
  return ItemSplit(*(np.sort(items).astype(np.int32)
                     for items in (warm_items, val_items, test_items)))


def partition_pairs(pairs: np.ndarray, item_split: ItemSplit
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sends each (user, item) pair to the part its item belongs to.

  Args:
    pairs: (n, 2) integer (user, item) pairs.
    item_split: a partition of the items.
  Returns:
    train, val, test pairs, each (n_part, 2) int32, in the input order.
  """
  items = pairs[:, 1]
  parts = []
  for part_items in item_split:
    parts.append(pairs[np.isin(items, part_items)].astype(np.int32).reshape(-1, 2))
  return tuple(parts)
