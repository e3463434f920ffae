"""Calibration across missing-modality patterns (`eval.calibration='validation'`).

An item's pattern is the set of modalities it has (its availability row).
Items that miss a modality are embedded from imputed features, so their
scores sit on another scale than complete items', and one shared ranking
mostly measures that offset. Per pattern p, an affine map with a positive
scale, s -> a_p * s + b_p, moves the mean and std of the pattern's scores
(over the validation users x the pattern's validation candidates) onto the
complete items'; it is shrunk towards the identity by n / (n + n0), n the
pattern's candidate count and n0 `eval.calibration_shrinkage`. Complete items
and patterns unseen on validation keep their scores.

No label enters the fit: choosing offsets by the validation metric itself
does not generalise (ml100k has 168 validation items), matching distributions
needs scores only. A positive scale keeps each user's order within a pattern.
The map is saved in the run folder (calibration.json) and applied to new
items by their pattern when a run serves them.
"""

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from milk_jax import evaluate
from milk_jax import runfolder
from milk_jax.errors import RunFolderError

CALIBRATIONS = ('none', 'validation')
CALIBRATION_FILE = 'calibration.json'


@dataclasses.dataclass(frozen=True)
class PatternMap:
  """The map of one pattern and the validation scores it was fitted on."""
  available: tuple[bool, ...]  # The pattern: one flag per modality.
  num_items: int  # Validation candidates of the pattern (n of the shrinkage).
  mean: float  # Of its scores over validation users x those items.
  std: float
  scale: float  # a_p > 0.
  offset: float  # b_p.


@dataclasses.dataclass(frozen=True)
class Calibration:
  """Per-pattern score maps; a pattern not listed keeps its scores."""
  modality_names: tuple[str, ...]
  shrinkage: float  # n0.
  reference_mean: float | None  # Complete items' scores; None when validation has none.
  reference_std: float | None
  maps: tuple[PatternMap, ...]
  epoch: int | None = None  # The epoch of the vectors it was fitted on.

  def item_maps(self, availability: np.ndarray) -> evaluate.ItemMaps:
    """(scale (N,), offset (N,)) float32 of items with these (N, M) availability rows."""
    availability = np.asarray(availability, bool).reshape(-1, len(self.modality_names))
    scale = np.ones(availability.shape[0], np.float32)
    offset = np.zeros(availability.shape[0], np.float32)
    for pattern in self.maps:
      rows = (availability == np.asarray(pattern.available)).all(axis=1)
      scale[rows], offset[rows] = pattern.scale, pattern.offset
    return scale, offset

  def report(self) -> dict[str, Any]:
    """JSON of the fitted values (results.json, eval.json and calibration.json)."""
    return {'method': 'validation', 'shrinkage': self.shrinkage, 'epoch': self.epoch,
            'modalities': list(self.modality_names),
            'reference': None if self.reference_mean is None else
                         {'mean': self.reference_mean, 'std': self.reference_std},
            'patterns': [{'pattern': pattern_name(p.available, self.modality_names),
                          'available': list(p.available), 'items': p.num_items,
                          'mean': p.mean, 'std': p.std, 'scale': p.scale, 'offset': p.offset}
                         for p in self.maps]}


def pattern_name(available: Sequence[bool], modality_names: Sequence[str]) -> str:
  """'image+text': the modalities a pattern has ('none' when it has none)."""
  return '+'.join(n for n, a in zip(modality_names, available) if a) or 'none'


def affine_match(mean: float, std: float, reference_mean: float, reference_std: float,
                 num_items: int, shrinkage: float) -> tuple[float, float]:
  """(scale, offset) moving (mean, std) onto the reference's, shrunk towards (1, 0).

  The full match a = reference_std / std, b = reference_mean - a * mean is
  blended with the identity by w = n / (n + n0): (1 - w + w a, w b); the scale
  stays positive. A pattern with no spread (or none to match) keeps its scores.
  """
  if not (std > 0 and reference_std > 0 and num_items > 0):
    return 1.0, 0.0
  scale = reference_std / std
  weight = num_items / (num_items + shrinkage)
  return 1.0 - weight + weight * scale, weight * (reference_mean - scale * mean)


def score_moments(user_vectors: np.ndarray, item_vectors: np.ndarray,
                  batch_size: int = 1024) -> tuple[float, float]:
  """(mean, std) of every user x item inner product, in float64, a user batch at a time."""
  total = total_sq = 0.0
  for start in range(0, user_vectors.shape[0], batch_size):
    scores = user_vectors[start:start + batch_size] @ item_vectors.T
    total += float(scores.sum())
    total_sq += float(np.square(scores).sum())
  count = user_vectors.shape[0] * item_vectors.shape[0]
  mean = total / count
  return mean, float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))


def fit(user_vectors, item_vectors, availability: np.ndarray, users: np.ndarray,
        candidates: np.ndarray, modality_names: Sequence[str], shrinkage: float,
        batch_size: int = 1024) -> Calibration:
  """Fit the per-pattern maps on the scores of `users` x `candidates` (no labels).

  Args:
    user_vectors, item_vectors: (num_users, d), (num_items, d).
    availability: (num_items, M) bool.
    users, candidates: the validation users and the items they rank.
  """
  users_v = np.asarray(user_vectors, np.float64)[np.asarray(users, np.int64)]
  items_v = np.asarray(item_vectors, np.float64)
  candidates = np.asarray(candidates, np.int64)
  rows = np.asarray(availability, bool)[candidates]
  patterns = sorted({tuple(bool(a) for a in row) for row in rows}, key=lambda p: (-sum(p), p))
  moments = {}
  if users_v.shape[0]:
    for pattern in patterns:
      items = candidates[(rows == np.asarray(pattern)).all(axis=1)]
      moments[pattern] = (items.size, *score_moments(users_v, items_v[items], batch_size))
  complete = tuple([True] * len(modality_names))
  reference = moments.get(complete)
  maps = []
  for pattern, (count, mean, std) in moments.items():
    scale, offset = (1.0, 0.0) if reference is None or pattern == complete else affine_match(
        mean, std, reference[1], reference[2], count, shrinkage)
    maps.append(PatternMap(pattern, int(count), mean, std, float(scale), float(offset)))
  return Calibration(tuple(modality_names), float(shrinkage),
                     None if reference is None else reference[1],
                     None if reference is None else reference[2], tuple(maps))


def fit_validation(eval_config, user_vectors, item_vectors, dataset, epoch: int
                   ) -> Calibration | None:
  """eval.calibration's maps from validation (None for 'none'): the validation users that
  the evaluator ranks for, x the validation candidates of eval.candidates; `epoch` is
  the one of the vectors."""
  if eval_config.get('calibration', 'none') == 'none':
    return None
  candidates = evaluate.candidate_items(dataset, 'val', eval_config.candidates)
  pairs = np.asarray(dataset.val_pairs, np.int64).reshape(-1, 2)
  users = np.unique(pairs[np.isin(pairs[:, 1], candidates), 0])
  fitted = fit(user_vectors, item_vectors, dataset.availability, users, candidates,
               dataset.modality_names, eval_config.calibration_shrinkage,
               eval_config.user_batch_size)
  return dataclasses.replace(fitted, epoch=int(epoch))


def write(folder: str, calibration: Calibration) -> None:
  """calibration.json (written atomically), beside vectors.npz of the same epoch."""
  runfolder.write_json(os.path.join(folder, CALIBRATION_FILE), calibration.report())


def read(folder: str, modality_names: Sequence[str]) -> Calibration:
  """calibration.json, checked (RunFolderError names the file and what is wrong)."""
  path = os.path.join(folder, CALIBRATION_FILE)
  if not os.path.exists(path):
    raise RunFolderError(f"{path} is missing (config.eval.calibration='validation': the run "
                         'writes it when its training ends); let the training finish, or run '
                         '`--mode=eval` on the run to write it')
  saved = runfolder.read_json(path, 'the score calibration per modality pattern')

  def fail(problem: str) -> RunFolderError:
    return RunFolderError(f'{path}: {problem}; the file is damaged: run `--mode=eval` on the run '
                          'to write it again')

  def number(value, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
      raise fail(f'{what} is {value!r}, not a finite number')
    if positive and value <= 0:
      raise fail(f'{what} is {value!r}, must be positive')
    return float(value)

  if not isinstance(saved, dict) or not isinstance(saved.get('patterns'), list):
    raise fail("no 'patterns' list")
  if saved.get('modalities') != list(modality_names):
    raise fail(f"'modalities' is {saved.get('modalities')!r}, but the run's are "
               f'{list(modality_names)}')
  epoch = saved.get('epoch')
  if isinstance(epoch, bool) or not isinstance(epoch, int):
    raise fail(f"'epoch' is {epoch!r}, not an integer")
  maps = []
  for i, entry in enumerate(saved['patterns']):
    where = f'patterns[{i}]'
    available = entry.get('available') if isinstance(entry, dict) else None
    if (not isinstance(available, list) or len(available) != len(modality_names)
        or not all(isinstance(a, bool) for a in available)):
      raise fail(f"{where}.available is {available!r}, expected {len(modality_names)} booleans")
    maps.append(PatternMap(tuple(available), int(number(entry.get('items'), f'{where}.items')),
                           number(entry.get('mean'), f'{where}.mean'),
                           number(entry.get('std'), f'{where}.std'),
                           number(entry.get('scale'), f'{where}.scale', positive=True),
                           number(entry.get('offset'), f'{where}.offset')))
  if len({m.available for m in maps}) != len(maps):
    raise fail('a pattern is listed twice')
  reference = saved.get('reference')
  if reference is not None and not isinstance(reference, dict):
    raise fail(f"'reference' is {reference!r}, expected an object or null")
  return Calibration(tuple(modality_names), number(saved.get('shrinkage'), 'shrinkage'),
                     None if reference is None else number(reference.get('mean'), 'reference.mean'),
                     None if reference is None else number(reference.get('std'), 'reference.std'),
                     tuple(maps), epoch)
