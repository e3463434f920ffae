"""Run by test_sharding.py in a fresh process with 4 host CPU devices.

Reads the base config as JSON on stdin (the tests' make_config), trains one
epoch per path on the same data and keys and prints, as JSON, the largest
parameter difference of each data-parallel path from the plain single-device
path.
"""

import copy
import json
import sys

import jax
import ml_collections
import numpy as np

from milk_jax import data as data_lib
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib


def one_epoch(config, dataset):
  program = step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset))
  state = program.fresh_state()
  state, metrics = program.run(state, 1)
  state, metrics = program.run(state, 2)
  params = jax.device_get(state.params)
  params['user_embedding'] = params['user_embedding'][:dataset.num_users]
  return params, float(metrics['loss']), state.params['user_embedding'].sharding


def max_difference(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  assert jax.device_count() == 4, jax.devices()
  base = ml_collections.ConfigDict(json.loads(sys.stdin.read()))
  base.data.synthetic.num_users = 202  # Not a multiple of 4: the sharded table gets padded.
  dataset = data_lib.load_dataset(base)
  report = {}
  for sampler in ('host', 'device'):
    config = copy.deepcopy(base)
    config.train.sampler = sampler
    plain, plain_loss, _ = one_epoch(config, dataset)
    for name, shard_users in (('data_parallel', False), ('user_rows', True)):
      sharded_config = copy.deepcopy(config)
      sharded_config.train.data_parallel = True
      sharded_config.train.shard_user_table = shard_users
      params, loss, table_sharding = one_epoch(sharded_config, dataset)
      report[f'{sampler}/{name}'] = {
          'max_param_difference': max_difference(plain, params),
          'loss_difference': abs(loss - plain_loss),
          'user_table_spec': str(table_sharding.spec),
          'user_table_devices': len(table_sharding.device_set)}
  print(json.dumps(report))


if __name__ == '__main__':
  main()
