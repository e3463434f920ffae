"""`--mode=recommend` and `--mode=export`: a trained run serves items it never saw.

  .venv/bin/python main.py --mode=recommend --workdir=RUN --config.recommend.new_items=DIR
  .venv/bin/python main.py --mode=export --workdir=RUN [--config.export.new_items=DIR]

Both read the run's own config (config.json) and refuse a conflicting one;
every input is checked before anything is written, and every file is
replaced atomically. They only read the run folder (no lock; see
milk_jax/api.py), so they may run while the run trains on; two of them
writing the same output do not collide (the last one's file wins, whole).
"""

import logging
import os
from pathlib import Path

import ml_collections
import numpy as np

from milk_jax import api
from milk_jax import runfolder
from milk_jax.data.errors import DataError
from milk_jax.data.files import read_text
from milk_jax.data.files import text_lines
from milk_jax.errors import ConfigError

log = logging.getLogger('milk_jax')

TSV_HEADER = 'user\trank\titem\tscore\n'


def read_user_file(path: str) -> list[str]:
  """Raw user ids, one per line (blank lines skipped)."""
  file = Path(path).expanduser()
  if not file.is_file():
    raise DataError(f'config.recommend.users: {file} is not a file')
  users = [line.strip() for line in text_lines(read_text(file)) if line.strip()]
  if not users:
    raise DataError(f'{file}: no user ids (one per line expected)')
  return users


def tsv_text(top: api.Recommendations) -> str:
  """`user rank item score` lines under a header; ranks from 1; users without a candidate
  at some rank (fewer than k items) have no line for it."""
  lines = [TSV_HEADER]
  for user, items, scores in zip(top.users.tolist(), top.items.tolist(), top.scores.tolist()):
    lines.extend(f'{user}\t{rank}\t{item}\t{score:.6g}\n'
                 for rank, (item, score) in enumerate(zip(items, scores), start=1) if item)
  return ''.join(lines)


def _write_parquet(path: str, top: api.Recommendations) -> bool:
  """Also writes Parquet when pyarrow is installed; False when it is not."""
  try:
    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  except ImportError:
    return False
  k = top.items.shape[1]
  keep = top.items.reshape(-1) != ''
  table = pa.table({'user': np.repeat(top.users, k)[keep],
                    'rank': np.tile(np.arange(1, k + 1), len(top.users))[keep],
                    'item': top.items.reshape(-1)[keep], 'score': top.scores.reshape(-1)[keep]})
  runfolder.write_file(path, lambda f: pq.write_table(table, f))
  return True


def recommend(config: ml_collections.ConfigDict, workdir: str) -> api.Recommendations:
  """Writes each user's top-k new items (TSV, and Parquet with pyarrow); returns them."""
  settings = config.recommend
  if settings.new_items is None and not settings.include_warm:
    raise ConfigError('config.recommend.new_items is None and config.recommend.include_warm is '
                      'False: give the folder of the new items to rank '
                      '(--config.recommend.new_items=DIR)')
  run = api.Run(workdir, config)
  users = None if settings.users is None else read_user_file(settings.users)
  if users is not None:
    run.user_rows(users, source=str(settings.users))
  items = run.load_items(settings.new_items)  # Checked in full before any work.
  output = settings.output or os.path.join(workdir, 'recommendations.tsv')
  if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
    raise DataError(f'config.recommend.output: the folder of {output} does not exist')
  if settings.include_warm:
    run.catalogue()  # Refused before any work when the warm items' vectors are not saved.
  log.info('recommending the top %d of %s%s for %d users (method %s, ranking with epoch %d%s)',
           settings.k, f'{len(items)} new items' if items is not None else 'no new items',
           ' and the warm items' if settings.include_warm else '',
           len(run.user_ids) if users is None else len(users), run.config.method, run.epoch,
           '; new items calibrated by modality pattern, calibration.json'
           if run.calibration is not None and items is not None else '')
  top = run.recommend(users, settings.k, items, settings.include_warm,
                      item_chunk=settings.item_chunk, user_chunk=settings.user_chunk)
  runfolder.write_text(output, tsv_text(top))
  parquet = os.path.splitext(output)[0] + '.parquet'
  wrote_parquet = _write_parquet(parquet, top)
  log.info('wrote %s%s', output, f' and {parquet}' if wrote_parquet else '')
  return top


def export(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
  """Writes user and item vectors (.npy) with their ids (.txt) for an external vector index.

  Items are the run's catalogue (warm and held-out) and, with
  config.export.new_items, the new items of that folder after them. Scores are
  inner products: users.npy @ items.npy.T.
  """
  run = api.Run(workdir, config)
  items = run.load_items(config.export.new_items)
  catalogue = run.catalogue()
  folder = config.export.output or os.path.join(workdir, 'export')
  os.makedirs(folder, exist_ok=True)
  item_vectors, item_ids = [catalogue], [run.catalogue_ids]
  if items is not None:
    item_vectors.append(run.embed(items))
    item_ids.append(items.ids)
  files = {'users.npy': run.user_vectors, 'items.npy': np.concatenate(item_vectors)}
  for name, array in files.items():
    vectors = np.asarray(array, np.float32)
    runfolder.write_file(os.path.join(folder, name), lambda f: np.save(f, vectors))
  for name, ids in (('user_ids.txt', run.user_ids), ('item_ids.txt', np.concatenate(item_ids))):
    runfolder.write_text(os.path.join(folder, name), ''.join(f'{i}\n' for i in ids.tolist()))
  log.info('exported %d users and %d items (d=%d, epoch %d) to %s', len(run.user_ids),
           files['items.npy'].shape[0], run.user_vectors.shape[1], run.epoch, folder)
  return {name: os.path.join(folder, name) for name in
          ('users.npy', 'items.npy', 'user_ids.txt', 'item_ids.txt')}
