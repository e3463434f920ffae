"""Peak memory of MICRO's chunked whole-catalogue parts on random data (milk_jax/methods/micro.py).

  .venv/bin/python scripts/micro_memory.py --part=knn --items=50000 --dim=64 --chunk_rows=1024
  .venv/bin/python scripts/micro_memory.py --part=contrastive --items=50000 --dim=64 --chunk_rows=1024

`knn` is one kNN search (k = 10) over the items; `contrastive` is the value and
gradient of one modality's contrastive term. Prints one JSON line: XLA's
compiled memory analysis (temporaries, arguments, outputs), the device's peak
bytes in use where the backend reports it (GPU), the process's peak RSS growth
(CPU), and the seconds of one run after compilation. Run each part in its own
process: the peaks are per process.
"""

import argparse
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from milk_jax.methods import micro  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--part', choices=('knn', 'contrastive'), default='knn')
  parser.add_argument('--items', type=int, default=50_000)
  parser.add_argument('--dim', type=int, default=64)
  parser.add_argument('--chunk_rows', type=int, default=1024)
  parser.add_argument('--k', type=int, default=10)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(args.items, args.dim)), jnp.float32)
  if args.part == 'knn':
    fn = jax.jit(lambda z: micro.knn(z, jnp.ones(z.shape[0], bool), args.k, args.chunk_rows))
    inputs = (x,)
  else:
    y = jnp.asarray(rng.normal(size=(args.items, args.dim)), jnp.float32)
    fn = jax.jit(jax.value_and_grad(
        lambda a, b: micro.contrastive(a, b, 0.5, args.chunk_rows), argnums=(0, 1)))
    inputs = (x, y)
  jax.block_until_ready(inputs)
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  compiled = fn.lower(*inputs).compile()
  analysis = compiled.memory_analysis()
  tic = time.perf_counter()
  jax.block_until_ready(compiled(*inputs))
  seconds = time.perf_counter() - tic
  stats = jax.devices()[0].memory_stats() or {}
  report = {
      'part': args.part, 'items': args.items, 'dim': args.dim, 'chunk_rows': args.chunk_rows,
      'device': jax.devices()[0].device_kind,
      'xla_temp_bytes': getattr(analysis, 'temp_size_in_bytes', None),
      'xla_argument_bytes': getattr(analysis, 'argument_size_in_bytes', None),
      'xla_output_bytes': getattr(analysis, 'output_size_in_bytes', None),
      'device_peak_bytes': stats.get('peak_bytes_in_use'),
      'rss_growth_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before,
      'seconds': round(seconds, 3),
  }
  print(json.dumps(report))


if __name__ == '__main__':
  main()
