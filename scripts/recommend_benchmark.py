"""Time `--mode=recommend` on a large synthetic catalogue of new items, and its peak memory.

  .venv/bin/python scripts/recommend_benchmark.py WORKDIR [--users 20000] [--items 1000000]

1. trains a small MILK run on synthetic data with USERS users (2 epochs: the
   model's quality does not matter here, its shapes do);
2. writes ITEMS synthetic new items (image 64 + text 32 dims, 10% missing
   one modality, declared in availability.npy) into WORKDIR/new_items;
3. runs `main.py --mode=recommend` on them in a child process and prints its
   wall time, items ranked per second and peak resident memory (the child's
   maximum RSS), and writes them to WORKDIR/recommend_benchmark.json.
Steps 1 and 2 are skipped when their outputs exist.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIMS = {'image': 64, 'text': 32}
WRITE_CHUNK = 100_000


def train_run(folder: str, num_users: int) -> None:
  if os.path.exists(os.path.join(folder, 'vectors.npz')):
    return
  subprocess.run([sys.executable, 'main.py', '--config=configs/default.py', f'--workdir={folder}',
                  f'--config.data.synthetic.num_users={num_users}',
                  '--config.data.synthetic.num_items=2000', '--config.train.num_epochs=2',
                  '--config.train.eval_every=1'], cwd=REPO, check=True)


def write_new_items(folder: str, num_items: int) -> None:
  if os.path.exists(os.path.join(folder, 'item_ids.txt')):
    return
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  files = {name: np.lib.format.open_memmap(os.path.join(folder, f'{name}_feat.npy'), 'w+',
                                           np.float32, (num_items, dim))
           for name, dim in DIMS.items()}
  for start in range(0, num_items, WRITE_CHUNK):
    stop = min(start + WRITE_CHUNK, num_items)
    for name, dim in DIMS.items():
      files[name][start:stop] = rng.normal(size=(stop - start, dim)).astype(np.float32)
  for array in files.values():
    array.flush()
  del files
  available = np.ones((num_items, len(DIMS)), bool)
  missing = rng.random(num_items) < 0.1
  available[missing, rng.integers(0, len(DIMS), missing.sum())] = False
  np.save(os.path.join(folder, 'availability.npy'), available)
  with open(os.path.join(folder, 'item_ids.txt'), 'w') as f:
    f.write(''.join(f'new_{i}\n' for i in range(num_items)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdir')
  parser.add_argument('--users', type=int, default=20_000)
  parser.add_argument('--items', type=int, default=1_000_000)
  parser.add_argument('--k', type=int, default=20)
  args = parser.parse_args()
  run, items = os.path.join(args.workdir, 'run'), os.path.join(args.workdir, 'new_items')
  print(f'training the run in {run} ({args.users} users)', flush=True)
  train_run(run, args.users)
  print(f'writing {args.items} new items to {items}', flush=True)
  write_new_items(items, args.items)
  output = os.path.join(args.workdir, 'recommendations.tsv')
  command = [sys.executable, 'main.py', '--mode=recommend', f'--workdir={run}',
             f'--config.recommend.new_items={items}', f'--config.recommend.k={args.k}',
             f'--config.recommend.output={output}']
  # A fresh parent for the one child, so that its peak RSS is not the training run's.
  measure = ('import resource, subprocess, sys, time; tic = time.perf_counter(); '
             f'subprocess.run({command!r}, check=True); '
             'print(time.perf_counter() - tic, '
             'resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')
  done = subprocess.run([sys.executable, '-c', measure], cwd=REPO, check=True,
                        stdout=subprocess.PIPE, text=True)
  seconds, peak_kib = (float(v) for v in done.stdout.split()[-2:])
  peak_mib = peak_kib / 1024  # Linux reports ru_maxrss in KiB.
  figures = {'users': args.users, 'new_items': args.items, 'k': args.k,
             'feature_dims': DIMS, 'seconds': round(seconds, 1),
             'items_per_second': round(args.items / seconds),
             'peak_rss_mib': round(peak_mib), 'cpu_count': os.cpu_count()}
  with open(os.path.join(args.workdir, 'recommend_benchmark.json'), 'w') as f:
    json.dump(figures, f, indent=2)
  print(json.dumps(figures))


if __name__ == '__main__':
  main()
