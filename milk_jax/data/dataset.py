"""The Dataset container and `load_dataset`, the whole data pipeline.

load_dataset: check the config -> read a layout (milk_jax/data/layouts/; or
generate a synthetic catalogue) and check it -> new-item split (unless the
layout gives one; random, or by first interaction time) -> declared
availability (the folder's availability file, feature rows that mark a
missing modality, the authors' missing files) -> the setting's simulated
missingness on top -> imputation fitted on the warm items -> optional L2
normalisation. Every random step has its own generator derived from
config.seed, so changing, say, the setting never moves the split.
"""

import dataclasses
import functools
from pathlib import Path

import ml_collections
import numpy as np

from milk_jax.data import ids
from milk_jax.data import layouts
from milk_jax.data import missing
from milk_jax.data import split
from milk_jax.data import synthetic
from milk_jax.data.errors import DataError
from milk_jax.data.features import feature_path
from milk_jax.data.features import read_availability_file
from milk_jax.data.features import read_availability_table
from milk_jax.data.features import refuse_items_without_modality
from milk_jax.data.layouts import interactions
from milk_jax.data.layouts import milk
from milk_jax.data.layouts import mmrec

FORMATS = ('synthetic', 'interactions', 'mmrec', 'milk')
NEGATIVE_POOLS = ('warm', 'all')
ID_KINDS = ('dense', 'raw')
SPLITS = ('random', 'time', 'popularity')
TABLE_FORMATS = ('interactions', 'mmrec')  # The layouts with raw ids, ratings and timestamps.
MISSING_ROWS = ('error', 'nan', 'nan_or_zero')
COMPLETE = 'none_missing'  # missing_report's key for items with every modality.

# Second entropy word of each purpose's generator, np.random.default_rng([seed, word, ...]).
# Values far from small epoch-like numbers, so no other module's stream collides.
_SPLIT_STREAM = 1001
_MISSING_STREAM = 1002
_SYNTHETIC_STREAM = 1003


@dataclasses.dataclass(eq=False)  # eq on arrays is ambiguous; compare fields explicitly.
class Dataset:
  """A split multimodal dataset, ready for training and new-item evaluation.

  Shapes: M modalities, I = num_items items, U = num_users users. Treat it
  as read-only: `train_keys` is cached from `train_pairs` on first use, so
  make a changed copy with `dataclasses.replace` instead of assigning fields.
  """
  modality_names: tuple[str, ...]  # M names, M >= 2.
  features: tuple[np.ndarray, ...]  # M arrays (I, dim_m) float32, imputed, maybe L2-normalised.
  availability: np.ndarray  # (I, M) bool: training-time mask on warm items, test-time on new.
  num_users: int
  num_items: int
  train_pairs: np.ndarray  # (n, 2) int32 unique (user, item), warm items only.
  val_pairs: np.ndarray  # (n, 2) int32 (user, item), item in val_items.
  test_pairs: np.ndarray  # (n, 2) int32 (user, item), item in test_items.
  warm_items: np.ndarray  # Sorted int32: items that may have training interactions.
  val_items: np.ndarray  # Sorted int32 new items of the validation split.
  test_items: np.ndarray  # Sorted int32 new items of the test split.
  source: str  # Where it came from: the folder, or 'synthetic(seed=0)'.
  user_ids: np.ndarray | None = None  # (U,) str raw id of each dense user; None = '0'..'U-1'.
  item_ids: np.ndarray | None = None  # (I,) str raw id of each item; None = '0'..'I-1'.
  # The fills fitted on the warm items; a run saves them to prepare items that come later.
  imputation: missing.Imputation | None = None

  def __post_init__(self):
    # Every dataset carries its id maps; dense ids are their own raw ids.
    if self.user_ids is None:
      self.user_ids = ids.dense_ids(self.num_users)
    if self.item_ids is None:
      self.item_ids = ids.dense_ids(self.num_items)

  @property
  def num_missing(self) -> np.ndarray:
    """(I,) int32: missing modalities per item."""
    return (len(self.modality_names) - self.availability.sum(axis=1)).astype(np.int32)

  @functools.cached_property
  def train_keys(self) -> np.ndarray:
    """(n,) int64 sorted user * I + item of the training pairs.

    Sorted by user then item, so membership is one searchsorted and a user's
    items are one contiguous slice. Cached: built once, used every epoch.
    """
    pairs = self.train_pairs.astype(np.int64)
    return np.sort(pairs[:, 0] * self.num_items + pairs[:, 1])

  def inactive_counts(self) -> tuple[int, int]:
    """(users without a training interaction, items without any interaction).

    Both are allowed (a user may have interacted with new items only, an
    item with nobody), but a model learns nothing for them, so logs say how many.
    """
    trained_users = np.unique(self.train_pairs[:, 0]).size
    pairs = (self.train_pairs, self.val_pairs, self.test_pairs)
    seen_items = np.unique(np.concatenate([p[:, 1] for p in pairs])).size
    return self.num_users - trained_users, self.num_items - seen_items

  def missing_report(self) -> dict[str, dict[str, int]]:
    """How many items of each split miss each modality, and how many miss none.

    Returns:
      {'warm': {<modality>: n, ..., 'none_missing': n}, 'val': ..., 'test': ...};
      an item missing two modalities counts under both.
    """
    report = {}
    for split_name, items in (('warm', self.warm_items), ('val', self.val_items),
                              ('test', self.test_items)):
      available = self.availability[items]
      counts = {name: int((~available[:, m]).sum()) for m, name in enumerate(self.modality_names)}
      counts[COMPLETE] = int(available.all(axis=1).sum())
      report[split_name] = counts
    return report

  def summary(self) -> str:
    """One line of counts for logs."""
    dims = ' '.join(f'{n}:{f.shape[1]}' for n, f in zip(self.modality_names, self.features))
    num_missing = self.num_missing
    def histogram(items: np.ndarray) -> str:
      counts = np.bincount(num_missing[items], minlength=len(self.modality_names) + 1)
      return '/'.join(str(c) for c in counts)
    new_items = np.union1d(self.val_items, self.test_items).astype(np.int64)
    idle_users, idle_items = self.inactive_counts()
    per_split = ', '.join(f'{split_name} ' + '/'.join(str(n) for n in counts.values())
                          for split_name, counts in self.missing_report().items())
    return (f'{self.source}: {self.num_users} users, {self.num_items} items '
            f'(warm {len(self.warm_items)}, val {len(self.val_items)}, '
            f'test {len(self.test_items)}); interactions train {len(self.train_pairs)}, '
            f'val {len(self.val_pairs)}, test {len(self.test_pairs)}; features {dims}; '
            f'items missing 0/1/.../M modalities: warm {histogram(self.warm_items)}, '
            f'new {histogram(new_items)}; items missing {"/".join(self.modality_names)}/none: '
            f'{per_split}; users without training interactions: '
            f'{idle_users}; items without any interaction: {idle_items}')


def _check_fraction(value: float, field: str) -> None:
  if not 0.0 <= value <= 1.0:
    raise DataError(f'config.data.{field}={value}: must lie in [0, 1]')


def _check_choice(value: str, choices: tuple[str, ...], field: str) -> None:
  if value not in choices:
    raise DataError(f'config.data.{field}={value!r}: unknown, expected one of {choices}')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Every config.data problem detectable without reading a file, as DataError."""
  data = config.data
  _check_choice(data.format, FORMATS, 'format')
  _check_choice(data.setting, missing.SETTINGS, 'setting')
  _check_choice(data.imputation, missing.IMPUTATIONS, 'imputation')
  _check_choice(data.negatives, NEGATIVE_POOLS, 'negatives')
  _check_choice(data.ids, ID_KINDS, 'ids')
  _check_choice(data.split, SPLITS, 'split')
  _check_table_options(data)
  _check_choice(data.missing_rows, MISSING_ROWS, 'missing_rows')
  modalities = tuple(data.modalities)
  if len(modalities) < 2 or len(set(modalities)) != len(modalities):
    raise DataError(f'config.data.modalities={modalities}: need at least 2 distinct names')
  if COMPLETE in modalities:
    raise DataError(f'config.data.modalities={modalities}: {COMPLETE!r} is reserved')
  if not isinstance(data.availability_file, str) or not data.availability_file:
    raise DataError(f'config.data.availability_file={data.availability_file!r}: must be a '
                    f'file name')
  for field in ('new_item_fraction', 'val_fraction', 'test_missing_rate', 'train_missing_rate',
                'unpopular_fraction', 'stratified_missing_rate'):
    _check_fraction(data[field], field)
  if not data.imputation_ridge > 0:
    raise DataError(f'config.data.imputation_ridge={data.imputation_ridge}: must be positive')
  if data.setting == 'groups':
    fractions = tuple(data.group_fractions)
    if not 1 <= len(fractions) <= len(modalities):
      raise DataError(f'config.data.group_fractions={fractions}: need 1 to {len(modalities)} '
                      f'groups (missing 0..M-1 of the {len(modalities)} modalities)')
    for f in fractions:
      if not 0.0 <= f <= 1.0:
        raise DataError(f'config.data.group_fractions={fractions}: {f} is outside [0, 1]')
    if abs(sum(fractions) - 1.0) > 1e-6:
      raise DataError(f'config.data.group_fractions={fractions}: must sum to 1, '
                      f'sum is {sum(fractions)}')
  if data.split == 'popularity' and data.format == 'milk':
    raise DataError("config.data.split='popularity': the 'milk' format's split is given by its "
                    'files')
  if data.format == 'synthetic':
    _check_synthetic_config(data.synthetic, len(modalities))
  elif data.path is None:
    raise DataError(f'config.data.path is None: the {data.format!r} format reads a folder')


def _check_table_options(data: ml_collections.ConfigDict) -> None:
  """Raw ids, ratings and time split need a layout with an interaction table."""
  if data.min_rating is not None and not np.isfinite(data.min_rating):
    raise DataError(f'config.data.min_rating={data.min_rating}: must be a finite number or None')
  if data.format in TABLE_FORMATS:
    return
  if data.ids == 'raw':
    raise DataError(f"config.data.ids='raw': the {data.format!r} format has no raw ids; only "
                    f'{" and ".join(TABLE_FORMATS)} read them')
  if data.min_rating is not None:
    raise DataError(f'config.data.min_rating={data.min_rating}: the {data.format!r} format has '
                    f'no ratings; only {" and ".join(TABLE_FORMATS)} have them')
  if data.split == 'time':
    given = ' (its split is given by its files)' if data.format == 'milk' else ''
    raise DataError(f"config.data.split='time': the {data.format!r} format has no "
                    f'timestamps{given}; only {" and ".join(TABLE_FORMATS)} have them')


def _check_synthetic_config(syn: ml_collections.ConfigDict, num_modalities: int) -> None:
  dims = tuple(syn.feature_dims)
  if len(dims) != num_modalities:
    raise DataError(f'config.data.synthetic.feature_dims={dims}: needs one width per modality '
                    f'({num_modalities} in config.data.modalities)')
  for field, value in (('num_users', syn.num_users), ('num_items', syn.num_items),
                       ('latent_dim', syn.latent_dim)) + tuple(
                           (f'feature_dims[{i}]', d) for i, d in enumerate(dims)):
    if int(value) != value or value < 1:
      raise DataError(f'config.data.synthetic.{field}={value}: must be a positive integer')
  for field in ('interactions_per_user', 'temperature'):
    if not syn[field] > 0:
      raise DataError(f'config.data.synthetic.{field}={syn[field]}: must be positive')
  if not syn.noise >= 0:
    raise DataError(f'config.data.synthetic.noise={syn.noise}: must be non-negative')
  _check_choice(syn.sampler, synthetic.SAMPLERS, 'synthetic.sampler')
  if not syn.candidate_factor >= 1:
    raise DataError(f'config.data.synthetic.candidate_factor={syn.candidate_factor}: must be at '
                    'least 1 (candidates per interaction)')


def read_layout(data: ml_collections.ConfigDict, seed: int) -> tuple[layouts.RawData, str]:
  """The raw dataset of the configured format, and a description of its source."""
  modalities = tuple(data.modalities)
  if data.format == 'synthetic':
    syn = data.synthetic
    features, pairs = synthetic.generate(
        np.random.default_rng([seed, _SYNTHETIC_STREAM]), int(syn.num_users),
        int(syn.num_items), tuple(int(d) for d in syn.feature_dims), int(syn.latent_dim),
        float(syn.interactions_per_user), float(syn.noise), float(syn.temperature),
        syn.sampler, float(syn.candidate_factor))
    return layouts.RawData(features, pairs, int(syn.num_users)), f'synthetic(seed={seed})'
  folder = Path(data.path).expanduser()
  if not folder.is_dir():
    raise DataError(f'config.data.path: {folder} is not a folder')
  options = interactions.TableOptions(ids=data.ids, item_ids_file=data.item_ids_file,
                                      min_rating=data.min_rating, first_times=data.split == 'time')
  if data.format == 'interactions':
    raw = interactions.read_interactions(folder, modalities, data.interactions_file, options,
                                         data.missing_rows)
  elif data.format == 'mmrec':
    raw = mmrec.read_mmrec(folder, modalities, data.inter_name, options, data.missing_rows)
  else:
    use_authors = data.authors_missing_files and data.setting in milk.AUTHORS_MISSING_SUFFIX
    raw = milk.read_milk(folder, modalities, data.missing_rows,
                         data.setting if use_authors else None)
  return raw, str(folder)


def declared_availability(data: ml_collections.ConfigDict, raw: layouts.RawData) -> np.ndarray:
  """(num_items, M) bool: what the dataset itself says each item has.

  The AND of the folder's availability file (when there is one), the feature
  rows that mark a missing modality and the authors' missing files. Every
  item must keep at least one modality; the error names the files involved.
  """
  num_items, modalities = raw.features[0].shape[0], tuple(data.modalities)
  declared = np.ones((num_items, len(modalities)), bool) if raw.present is None else raw.present
  if data.format == 'synthetic':
    return declared
  folder = Path(data.path).expanduser()
  # Feature files are named when their marker rows took part (not for the authors' files' part).
  sources = [feature_path(folder, name) for m, name in enumerate(modalities)
             if data.missing_rows != 'error' and not declared[:, m].all()]
  path = folder / data.availability_file
  if path.is_file():
    if path.suffix == '.tsv':  # Keyed by item id, for raw ids.
      item_ids = raw.item_ids if raw.item_ids is not None else ids.dense_ids(num_items)
      declared = declared & read_availability_table(path, item_ids, modalities)
    else:
      declared = declared & read_availability_file(path, num_items, modalities)
    sources.insert(0, path)
  refuse_items_without_modality(declared, sources + list(raw.missing_files))
  return declared


def load_dataset(config: ml_collections.ConfigDict) -> Dataset:
  """Reads (or generates), splits, masks, imputes and normalises; see the module doc.

  Uses config.seed and config.data.*. Deterministic given the config. Raises
  DataError on any bad input before doing any work on the data.
  """
  check_config(config)
  data = config.data
  seed = int(config.seed)
  raw, source = read_layout(data, seed)
  num_items = raw.features[0].shape[0]
  item_split = raw.item_split
  # DGMRec's popularity groups, over all interactions: the strata of the popularity split and
  # of the stratified setting.
  popular = None
  if data.split == 'popularity' or data.setting == 'stratified':
    popular = split.popular_items(split.item_popularity(raw.pairs, num_items),
                                  data.unpopular_fraction)
  if item_split is None and data.split == 'popularity':
    item_split = split.popularity_item_split(np.random.default_rng([seed, _SPLIT_STREAM]), popular,
                                             data.new_item_fraction, data.val_fraction)
  elif item_split is None and data.split == 'time':
    item_split = split.time_item_split(raw.first_time, data.new_item_fraction, data.val_fraction)
  elif item_split is None:
    item_split = split.new_item_split(np.random.default_rng([seed, _SPLIT_STREAM]), num_items,
                                      data.new_item_fraction, data.val_fraction)
  train_pairs, val_pairs, test_pairs = split.partition_pairs(raw.pairs, item_split)
  if not (len(train_pairs) and len(val_pairs) and len(test_pairs)):
    raise DataError(f'{source}: empty split: {len(train_pairs)} train, {len(val_pairs)} val, '
                    f'{len(test_pairs)} test interactions ({len(item_split.warm_items)} warm, '
                    f'{len(item_split.val_items)} val, {len(item_split.test_items)} test items)')
  declared = declared_availability(data, raw)
  # The authors' missing files already say which items miss what: nothing is simulated on top.
  setting = 'given' if raw.missing_files else data.setting
  available = missing.availability_mask(
      setting, item_split.warm_items, item_split.new_items, len(raw.features),
      data.test_missing_rate, data.train_missing_rate, tuple(data.group_fractions),
      warm_rng=np.random.default_rng([seed, _MISSING_STREAM, 0]),
      new_rng=np.random.default_rng([seed, _MISSING_STREAM, 1]), declared=declared,
      popular=popular, stratified_missing_rate=data.stratified_missing_rate)
  imputation = missing.fit_imputation(raw.features, available, data.imputation,
                                      fit_rows=item_split.warm_items, ridge=data.imputation_ridge)
  features = missing.apply_imputation(imputation, raw.features, available)
  if data.normalize:
    features = tuple(missing.l2_normalize(x) for x in features)
  return Dataset(
      modality_names=tuple(data.modalities), features=features, availability=available,
      num_users=int(raw.num_users), num_items=int(num_items), train_pairs=train_pairs,
      val_pairs=val_pairs, test_pairs=test_pairs, warm_items=item_split.warm_items,
      val_items=item_split.val_items, test_items=item_split.test_items, source=source,
      user_ids=raw.user_ids, item_ids=raw.item_ids, imputation=imputation)
