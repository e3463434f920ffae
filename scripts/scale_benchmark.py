"""How data preparation, an epoch, evaluation and recommend grow with users, items, interactions.

  .venv/bin/python scripts/scale_benchmark.py OUT_DIR [--grid=full|tiny] [--point_timeout=900]
      [--only=NAME,...]   # these points again; the others' rows are read from OUT_DIR/points/
  .venv/bin/python scripts/scale_benchmark.py OUT_DIR --compare_samplers=100000,20000,2000000

A grid point is MILK (configs/default.py: d = 64, image 64 + text 32 features)
on the synthetic catalogue of that many users, items and interactions
(`data.synthetic.sampler=candidates`, interactions_per_user = interactions /
users), batch 4096, host sampler. Each point runs in a fresh child process
(this script with --point), so its peak resident memory (VmHWM) is its own.
The child times, one after the other:
  data         load_dataset: generation, new-item split, masks, imputation, normalisation
  first epoch  epoch 1, compiling included (compile_seconds apart)
  epoch        epoch 2, the steady cost (triples_per_second)
  val          one validation evaluation, as the training loop runs it
  test         the test evaluation a run ends with (plain, by group, within group)
  recommend    every user's top 20 of the new (val + test) items with topk.TopK in
               Run.recommend's chunks, from the trained vectors (the TSV is not written)
and VmHWM after each phase, writing its JSON after every phase: a point cut
at --point_timeout keeps its finished phases and says where it stopped.
Evaluation and recommend rank every new item for every user, so they are
skipped (eval_skipped says why) above --eval_limit users x new items; above
--single_epoch_above training interactions one epoch runs, and the steady
epoch is the first minus its compilation (epoch_note).
The grid varies one axis at a time around a base point (100k users, 50k
items, 2M interactions) and adds the corner (1M users, 500k items, 20M
interactions). Writes OUT_DIR/points/*.json (and each child's log),
OUT_DIR/scale.csv, OUT_DIR/scale.json (rows and log-log slopes per axis and
phase), OUT_DIR/scale.md (the table; * marks an epoch taken from the first)
and OUT_DIR/scale.png (plots.plot_scale).

--compare_samplers=U,I,N times `synthetic.generate` with the exact softmax
sampler and the candidates sampler side by side in one process and writes
OUT_DIR/sampler_comparison.json.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from milk_jax import plots  # pylint: disable=g-import-not-at-top,wrong-import-position

AXES = ('users', 'items', 'interactions')
PHASES = ('data', 'compile', 'epoch', 'val', 'test', 'recommend')
# (users, items, interactions) of the base point and the values each axis takes around it.
GRIDS = {
    'full': {'base': (100_000, 50_000, 2_000_000),
             'users': (30_000, 100_000, 300_000, 1_000_000),
             'items': (10_000, 50_000, 200_000, 500_000),
             'interactions': (500_000, 2_000_000, 8_000_000, 20_000_000),
             'corner': (1_000_000, 500_000, 20_000_000)},
    'tiny': {'base': (300, 400, 3000), 'users': (), 'items': (),
             'interactions': (1500, 3000), 'corner': None},
}
COLUMNS = ('name', 'axes', 'users', 'items', 'interactions', 'train_interactions', 'status',
           'data_seconds', 'compile_seconds', 'first_epoch_seconds', 'epoch_seconds',
           'triples_per_second', 'epoch_note', 'val_seconds', 'test_seconds',
           'recommend_seconds', 'eval_skipped',
           'peak_rss_mib', 'rss_after_data_mib', 'rss_after_epochs_mib', 'rss_after_eval_mib',
           'wall_seconds', 'load_before', 'load_after')
RECOMMEND_K = 20
# Users x new items above which evaluation and recommend are skipped: at the base point
# (1e9) they take ~4 minutes together on the shared 2-core CPU, and grow with this product.
EVAL_LIMIT = 1e9
# Training interactions above which one epoch is run and the steady one is the first minus
# its compilation (20M interactions: ~2-5 minutes an epoch on the shared 2-core CPU).
SINGLE_EPOCH_ABOVE = 5e6


# ------------------------------------------------------------------ the grid

def grid_points(grid: str) -> list[dict]:
  """Unique points of a grid, each with the axes it lies on ('users+items+interactions' for
  the base point, 'corner' for the corner)."""
  spec = GRIDS[grid]
  base = spec['base']
  points = {}
  def add(shape, axis):
    name = f'u{shape[0]}_i{shape[1]}_n{shape[2]}'
    point = points.setdefault(name, {'name': name, 'users': shape[0], 'items': shape[1],
                                     'interactions': shape[2], 'axes': []})
    point['axes'].append(axis)
  for position, axis in enumerate(AXES):
    for value in spec[axis] or (base[position],):
      shape = list(base)
      shape[position] = value
      add(tuple(shape), axis)
  if spec['corner'] is not None:
    add(spec['corner'], 'corner')
  return [{**p, 'axes': '+'.join(p['axes'])} for p in points.values()]


def point_config(users: int, items: int, interactions: int, batch_size: int):
  """configs/default.py on the candidates-sampled synthetic catalogue of this shape."""
  from configs import default  # pylint: disable=import-outside-toplevel
  config = default.get_config()
  syn = config.data.synthetic
  syn.num_users, syn.num_items = users, items
  syn.interactions_per_user = interactions / users
  syn.sampler = 'candidates'
  config.train.batch_size = batch_size
  return config


def peak_rss_mib() -> float:
  """This process's peak resident memory so far (VmHWM), MiB."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  return float('nan')


# ------------------------------------------------------------------ one point (the child)

def measure_point(users: int, items: int, interactions: int, batch_size: int, out_path: str,
                  eval_limit: float = EVAL_LIMIT,
                  single_epoch_above: float = SINGLE_EPOCH_ABOVE) -> None:
  """Time every phase of one point, writing `out_path` after each (see the module doc).

  Evaluation and recommend rank every new item for every user: above
  `eval_limit` (users x new items) they are skipped, and the row says so.
  Above `single_epoch_above` training interactions only one epoch runs, and
  the steady epoch is the first minus its compilation (`epoch_note`).
  """
  import jax  # pylint: disable=import-outside-toplevel
  from milk_jax import api, config as config_lib, data as data_lib, evaluate, topk  # pylint: disable=import-outside-toplevel
  from milk_jax.training import state as state_lib, step as step_lib  # pylint: disable=import-outside-toplevel

  result = {'users': users, 'items': items, 'interactions': interactions,
            'batch_size': batch_size, 'phase': 'data'}
  def save(next_phase):
    result['phase'] = next_phase
    result['peak_rss_mib'] = round(peak_rss_mib(), 1)
    with open(out_path + '.tmp', 'w') as f:
      json.dump(result, f, indent=1)
    os.replace(out_path + '.tmp', out_path)
  save('data')
  config = point_config(users, items, interactions, batch_size)
  config_lib.check_config(config)
  tic = time.perf_counter()
  dataset = data_lib.load_dataset(config)
  result['data_seconds'] = time.perf_counter() - tic
  result['train_interactions'] = int(len(dataset.train_pairs))
  result['rss_after_data_mib'] = round(peak_rss_mib(), 1)
  save('first_epoch')

  program = step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset))
  state = program.fresh_state()
  tic = time.perf_counter()
  state, metrics = program.run(state, 1)
  jax.block_until_ready(metrics)
  result['first_epoch_seconds'] = time.perf_counter() - tic
  result['compile_seconds'] = program.last_compile_seconds
  save('epoch')
  if len(dataset.train_pairs) > single_epoch_above:
    result['epoch_seconds'] = result['first_epoch_seconds'] - result['compile_seconds']
    result['epoch_note'] = 'first epoch minus its compilation'
  else:
    tic = time.perf_counter()
    state, metrics = program.run(state, 2)
    jax.block_until_ready(metrics)
    result['epoch_seconds'] = time.perf_counter() - tic
  steps = -(-len(dataset.train_pairs) // batch_size)
  result['triples_per_second'] = steps * batch_size / result['epoch_seconds']
  result['rss_after_epochs_mib'] = round(peak_rss_mib(), 1)
  new_items = np.union1d(dataset.val_items, dataset.test_items)
  if dataset.num_users * new_items.size > eval_limit:
    result['eval_skipped'] = (f'{dataset.num_users} users x {new_items.size} new items = '
                              f'{dataset.num_users * new_items.size:.2g} > {eval_limit:.2g}')
    save('done')
    return
  save('val')

  user_vectors, item_vectors = jax.block_until_ready(program.vectors(state.variables))
  tic = time.perf_counter()
  evaluate.evaluate_split(config.eval, user_vectors, item_vectors, dataset, 'val')
  result['val_seconds'] = time.perf_counter() - tic
  save('test')
  tic = time.perf_counter()
  evaluate.held_out_metrics(config.eval, user_vectors, item_vectors, dataset)
  result['test_seconds'] = time.perf_counter() - tic
  result['rss_after_eval_mib'] = round(peak_rss_mib(), 1)
  save('recommend')

  new_vectors = np.asarray(item_vectors, np.float32)[new_items]
  users_host = np.asarray(user_vectors, np.float32)[:dataset.num_users]
  tic = time.perf_counter()
  ranking = topk.TopK(users_host, RECOMMEND_K, api.USER_CHUNK)
  for start in range(0, new_items.size, api.ITEM_CHUNK):
    ranking.add(new_vectors[start:start + api.ITEM_CHUNK], start, api.ITEM_CHUNK)
  top_items, _ = ranking.result()
  result['recommend_seconds'] = time.perf_counter() - tic
  assert top_items.shape == (dataset.num_users, RECOMMEND_K)
  save('done')


# ------------------------------------------------------------------ the grid (the parent)

def run_point(point: dict, out_dir: str, batch_size: int, timeout: float,
              limits: tuple[float, float] = (EVAL_LIMIT, SINGLE_EPOCH_ABOVE)) -> dict:
  """One point in a fresh child process; its row (finished phases only when it was cut)."""
  os.makedirs(os.path.join(out_dir, 'points'), exist_ok=True)
  path = os.path.join(out_dir, 'points', f"{point['name']}.json")
  log_path = os.path.join(out_dir, 'points', f"{point['name']}.log")
  command = [sys.executable, os.path.abspath(__file__), out_dir, '--batch_size',
             str(batch_size), '--point', f"{point['users']},{point['items']},{point['interactions']}",
             '--point_out', path, '--eval_limit', str(limits[0]),
             '--single_epoch_above', str(limits[1])]
  row = dict(point, load_before=' '.join(f'{v:.2f}' for v in os.getloadavg()))
  tic = time.perf_counter()
  with open(log_path, 'w') as log:
    try:
      done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            timeout=timeout)
      status = 'ok' if done.returncode == 0 else f'failed (exit {done.returncode}, see {log_path})'
    except subprocess.TimeoutExpired:
      status = f'cut at {timeout:g} s'
  row['wall_seconds'] = time.perf_counter() - tic
  row['load_after'] = ' '.join(f'{v:.2f}' for v in os.getloadavg())
  measured = {}
  if os.path.exists(path):
    with open(path) as f:
      measured = json.load(f)
  if status.startswith('cut'):
    status += f" during {measured.get('phase', 'data')}"
  row.update({k: v for k, v in measured.items() if k in COLUMNS})
  row['status'] = status
  return row


def fit_slopes(rows: list[dict]) -> dict[str, dict[str, float]]:
  """{axis: {phase: slope of log(seconds) against log(size)}} over each axis' points.

  The epoch's slope on the users and items axes is against the varied size
  with the interactions fixed; on the interactions axis, against the
  interactions. NaN where fewer than two points of the axis measured a phase.
  """
  slopes = {}
  for axis in AXES:
    on_axis = [r for r in rows if axis in r['axes'].split('+')]
    slopes[axis] = {}
    for phase in PHASES:
      points = [(r[axis], r[f'{phase}_seconds']) for r in on_axis
                if r.get(f'{phase}_seconds') is not None and r[f'{phase}_seconds'] > 0]
      if len({x for x, _ in points}) < 2:
        slopes[axis][phase] = float('nan')
        continue
      x, y = np.log(np.asarray(points, float)).T
      slopes[axis][phase] = float(np.polyfit(x, y, 1)[0])
  return slopes


def write_outputs(rows: list[dict], out_dir: str, title: str) -> dict:
  """scale.csv, scale.json and scale.png of the measured rows."""
  with open(os.path.join(out_dir, 'scale.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
  slopes = fit_slopes(rows)
  fitted = {axis: {phase: None if np.isnan(v) else round(v, 3) for phase, v in by_phase.items()}
            for axis, by_phase in slopes.items()}  # Strict JSON: no NaN.
  summary = {'rows': rows, 'slopes': fitted, 'title': title, 'cpu_count': os.cpu_count()}
  with open(os.path.join(out_dir, 'scale.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  plots.plot_scale(rows, slopes, os.path.join(out_dir, 'scale.png'), title)
  with open(os.path.join(out_dir, 'scale.md'), 'w') as f:
    f.write(markdown_table(rows))
  return summary


def markdown_table(rows: list[dict]) -> str:
  """The rows as a Markdown table: sizes, seconds per phase, peak memory, status."""
  def cell(row, key, digits=1):
    value = row.get(key)
    return '-' if value is None else f'{value:,.{digits}f}'
  lines = ['| users | items | interactions | data (s) | compile (s) | epoch (s) | triples/s '
           '| val (s) | test (s) | recommend (s) | peak RSS (GiB) | status |',
           '|' + '---|' * 12]
  for row in sorted(rows, key=lambda r: (r['interactions'], r['users'], r['items'])):
    epoch = cell(row, 'epoch_seconds') + ('*' if row.get('epoch_note') else '')
    status = row.get('status', '')
    if row.get('eval_skipped'):
      status += f"; eval and recommend skipped: {row['eval_skipped']}"
    peak = '-' if row.get('peak_rss_mib') is None else f"{row['peak_rss_mib'] / 1024:.2f}"
    lines.append(f"| {row['users']:,} | {row['items']:,} | {row['interactions']:,} | "
                 f"{cell(row, 'data_seconds')} | {cell(row, 'compile_seconds')} | {epoch} | "
                 f"{cell(row, 'triples_per_second', 0)} | {cell(row, 'val_seconds')} | "
                 f"{cell(row, 'test_seconds')} | {cell(row, 'recommend_seconds')} | {peak} | "
                 f'{status} |')
  return '\n'.join(lines) + '\n'


def compare_samplers(out_dir: str, users: int, items: int, interactions: int) -> dict:
  """Seconds of `synthetic.generate` with each sampler at one shape, side by side."""
  from milk_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  config = point_config(users, items, interactions, 4096)
  syn = config.data.synthetic
  figures = {'users': users, 'items': items, 'interactions': interactions,
             'load_before': ' '.join(f'{v:.2f}' for v in os.getloadavg())}
  for sampler in ('softmax', 'candidates'):
    tic = time.perf_counter()
    _, pairs = synthetic.generate(np.random.default_rng(0), users, items,
                                  tuple(syn.feature_dims), syn.latent_dim,
                                  syn.interactions_per_user, syn.noise, syn.temperature,
                                  sampler, syn.candidate_factor)
    figures[f'{sampler}_seconds'] = round(time.perf_counter() - tic, 2)
    figures[f'{sampler}_pairs'] = int(len(pairs))
  figures['load_after'] = ' '.join(f'{v:.2f}' for v in os.getloadavg())
  with open(os.path.join(out_dir, 'sampler_comparison.json'), 'w') as f:
    json.dump(figures, f, indent=1)
  return figures


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('out_dir')
  parser.add_argument('--grid', choices=sorted(GRIDS), default='full')
  parser.add_argument('--batch_size', type=int, default=4096)
  parser.add_argument('--point_timeout', type=float, default=900.0,
                      help='seconds a point may run before it is cut')
  parser.add_argument('--eval_limit', type=float, default=EVAL_LIMIT,
                      help='users x new items above which evaluation and recommend are skipped')
  parser.add_argument('--single_epoch_above', type=float, default=SINGLE_EPOCH_ABOVE,
                      help='training interactions above which only one epoch runs')
  parser.add_argument('--only', default=None,
                      help='comma-separated point names (as in points/): run these only')
  parser.add_argument('--compare_samplers', default=None, metavar='U,I,N')
  parser.add_argument('--point', default=None, help=argparse.SUPPRESS)  # The child's shape.
  parser.add_argument('--point_out', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  os.makedirs(os.path.join(args.out_dir, 'points'), exist_ok=True)
  if args.point is not None:
    users, items, interactions = (int(v) for v in args.point.split(','))
    measure_point(users, items, interactions, args.batch_size, args.point_out, args.eval_limit,
                  args.single_epoch_above)
    return
  if args.compare_samplers is not None:
    users, items, interactions = (int(v) for v in args.compare_samplers.split(','))
    print(json.dumps(compare_samplers(args.out_dir, users, items, interactions)))
    return
  points = grid_points(args.grid)
  names = set(args.only.split(',')) if args.only else {p['name'] for p in points}
  title = f'MILK, batch {args.batch_size}, {os.cpu_count()} CPU cores'
  rows = {}
  for point in points:
    row_path = os.path.join(args.out_dir, 'points', f"{point['name']}.row.json")
    if point['name'] in names:
      print(f"{point['name']} ({point['axes']}) ...", flush=True)
      row = run_point(point, args.out_dir, args.batch_size, args.point_timeout,
                      (args.eval_limit, args.single_epoch_above))
      with open(row_path, 'w') as f:
        json.dump(row, f, indent=1)
      print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v)
                        for k, v in row.items()}), flush=True)
    elif os.path.exists(row_path):  # Measured by an earlier call (--only): kept.
      with open(row_path) as f:
        row = json.load(f)
    else:
      continue
    rows[point['name']] = row
    write_outputs(list(rows.values()), args.out_dir, title)
  print(json.dumps(fit_slopes(list(rows.values())), indent=1))


if __name__ == '__main__':
  main()
