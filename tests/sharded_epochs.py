"""Run by test_sharding.py in a fresh process with 4 host CPU devices.

Reads the base config as JSON on stdin (the tests' make_config) and prints, as JSON:
  - MILK, both samplers: each data-parallel layout's largest differences from the plain
    single-device run after two epochs on the same data and keys (and with features split
    by rows, from the same layout with replicated features), with the rows each device
    holds of a split table and the collectives that move a whole feature table;
  - two baselines that read features otherwise (CLCRec gathers the batch's and its
    negatives' rows, DropoutNet encodes every item with item-sized extras): item features
    split by rows against replicated ones;
  - a MILK run with item features split by rows, stopped after its first epoch and
    resumed, against an uninterrupted run with replicated ones (results, vectors.npz).
The catalogue has 202 users and 162 items, neither a multiple of 4: both splits are padded.
"""

import copy
import json
import os
import re
import sys
import tempfile

import jax
import ml_collections
import numpy as np

from milk_jax import data as data_lib
from milk_jax import run as run_lib
from milk_jax import serving
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

LAYOUTS = {'data_parallel': (False, False), 'user_rows': (True, False),
           'item_rows': (False, True), 'user_and_item_rows': (True, True)}


def two_epochs(config, dataset, extras=None):
  """Params (user table unpadded), last loss, item vectors, program and final state."""
  program = step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset),
                                  extras)
  state = program.fresh_state()
  state, metrics = program.run(state, 1)
  state, metrics = program.run(state, 2)
  params = jax.device_get(state.params)
  if 'user_embedding' in params:
    params['user_embedding'] = params['user_embedding'][:dataset.num_users]
  _, items = program.vectors(state.variables)
  return params, float(metrics['loss']), np.asarray(items), program, state


def max_difference(a, b):
  return max((float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
              if np.size(x)), default=0.0)


def feature_table_collectives(hlo: str, dataset) -> list[str]:
  """The collectives of a compiled program whose result is a whole feature table (padded or
  not, one modality or all concatenated): what splitting the features by rows must avoid."""
  rows = {dataset.num_items, -(-dataset.num_items // jax.device_count()) * jax.device_count()}
  widths = {f.shape[1] for f in dataset.features} | {sum(f.shape[1] for f in dataset.features)}
  found = re.findall(r'= \S+\[(\d+),(\d+)\]\S* (all-gather|all-reduce|all-to-all)\(', hlo)
  return sorted({f'{kind}[{r},{w}]' for r, w, kind in found
                 if int(r) in rows and int(w) in widths})


def split_figures(program, state, dataset) -> dict:
  """How the item tables lie on the devices, and what the compiled programs move."""
  features = program.tables.features[0]
  epoch_hlo = program.compiled_epoch().as_text()
  embed_hlo = program.embed.lower(state.variables, program.tables).compile().as_text()
  return {'feature_shard_rows': [s.data.shape[0] for s in features.addressable_shards],
          'feature_spec': str(features.sharding.spec),
          'collectives': feature_table_collectives(epoch_hlo + embed_hlo, dataset)}


def milk_layouts(base, dataset, report):
  for sampler in ('host', 'device'):
    config = copy.deepcopy(base)
    config.train.sampler = sampler
    plain, plain_loss, plain_items, _, _ = two_epochs(config, dataset)
    replicated_features = {}  # By user layout: the params and items that split features match.
    for name, (shard_users, shard_items) in LAYOUTS.items():
      sharded_config = copy.deepcopy(config)
      sharded_config.train.data_parallel = True
      sharded_config.train.shard_user_table = shard_users
      sharded_config.train.shard_item_features = shard_items
      params, loss, items, program, state = two_epochs(sharded_config, dataset)
      table_sharding = state.params['user_embedding'].sharding
      figures = {'max_param_difference': max_difference(plain, params),
                 'loss_difference': abs(loss - plain_loss),
                 'max_item_vector_difference': max_difference(plain_items, items),
                 'item_vector_rows': items.shape[0],
                 'user_table_spec': str(table_sharding.spec),
                 'user_table_devices': len(table_sharding.device_set)}
      if shard_items:
        figures['max_difference_from_replicated_features'] = max_difference(
            replicated_features[shard_users], (params, items))
        figures.update(split_figures(program, state, dataset))
      else:
        replicated_features[shard_users] = (params, items)
      report[f'{sampler}/{name}'] = figures


def backbone_extras(config, dataset):
  """Random CF vectors of the backbone's shapes (as the benchmark's): no backbone to train."""
  rng = np.random.default_rng(config.seed)
  d = config.model.embed_dim
  return {'cf_users': rng.normal(size=(dataset.num_users, d)).astype(np.float32),
          'cf_items': rng.normal(size=(dataset.num_items, d)).astype(np.float32)}


def baselines(base, dataset, report):
  for method, extras in (('clcrec', None), ('dropoutnet', backbone_extras(base, dataset))):
    config = copy.deepcopy(base)
    config.method = method
    config.train.data_parallel = True
    replicated, _, replicated_items, _, _ = two_epochs(config, dataset, extras)
    config.train.shard_item_features = True
    params, _, items, program, state = two_epochs(config, dataset, extras)
    report[f'{method}/item_rows'] = {
        'max_param_difference': max_difference(replicated, params),
        'max_item_vector_difference': max_difference(replicated_items, items),
        'item_vector_rows': items.shape[0], **split_figures(program, state, dataset)}


class Stop(Exception):
  """Raised by the epoch callback: a run cut off after its first epoch."""


def stop_after_first_epoch(epoch, metrics):
  del metrics
  if epoch == 1:
    raise Stop()


def resumed_run(base, dataset, report):
  config = copy.deepcopy(base)
  config.train.num_epochs = 2
  config.train.eval_every = 1
  config.train.data_parallel = True
  with tempfile.TemporaryDirectory() as folder:
    replicated_dir, split_dir = os.path.join(folder, 'replicated'), os.path.join(folder, 'split')
    replicated = run_lib.train_and_evaluate(config, replicated_dir)
    config.train.shard_item_features = True
    try:
      run_lib.train_and_evaluate(config, split_dir, epoch_callback=stop_after_first_epoch)
    except Stop:
      pass
    resumed = run_lib.train_and_evaluate(config, split_dir)
    vectors = [serving.read_vectors(d, dataset.num_users, dataset.num_items)
               for d in (replicated_dir, split_dir)]
    report['resumed_item_rows'] = {
        'same_metrics': all(resumed[k] == replicated[k] for k in ('best_epoch', 'val', 'test')),
        'max_vector_difference': max_difference(vectors[0][:2], vectors[1][:2]),
        'same_vectors': all(np.array_equal(a, b) for a, b in zip(vectors[0], vectors[1])),
        'item_vector_rows': vectors[1][1].shape[0]}


def main():
  assert jax.device_count() == 4, jax.devices()
  base = ml_collections.ConfigDict(json.loads(sys.stdin.read()))
  base.data.synthetic.num_users = 202  # Not a multiple of 4: the sharded tables get padded.
  base.data.synthetic.num_items = 162
  dataset = data_lib.load_dataset(base)
  report = {}
  milk_layouts(base, dataset, report)
  baselines(base, dataset, report)
  resumed_run(base, dataset, report)
  print(json.dumps(report))


if __name__ == '__main__':
  main()
