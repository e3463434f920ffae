"""The new-item split: some items lose all their training interactions.

Protocol (spec, "Protocol"): a random share of the items becomes new; those
are divided into validation and test items. Interactions follow their item,
so every interaction lands in exactly one of train / val / test and no user
trains on a new item.
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
  num_new = int(np.floor(new_item_fraction * num_items))
  num_val = int(np.floor(val_fraction * num_new))
  order = rng.permutation(num_items)
  val_items = np.sort(order[:num_val])
  test_items = np.sort(order[num_val:num_new])
  warm_items = np.sort(order[num_new:])
  return ItemSplit(warm_items.astype(np.int32), val_items.astype(np.int32),
                   test_items.astype(np.int32))


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
