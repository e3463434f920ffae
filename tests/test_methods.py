"""The contract every registered method keeps (optax's shared-test pattern).

Each module under milk_jax/methods/ is checked on the tiny synthetic
catalogue: shapes, a finite loss, one compilation, a loss that goes down, a
checkpoint round trip, new items' vectors free of any CF row, and (slow)
exact resume and a short run that beats the untrained model.
"""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import api
from milk_jax import backbone
from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import loop as loop_lib
from milk_jax import methods
from milk_jax import runfolder
from milk_jax import train
from tests.helpers import tiny_config

METHODS = methods.names()


def method_config(name: str, **train_overrides):
  config = tiny_config(**train_overrides)
  config.method = name
  # A backbone with signal (training AUC about 0.83): GoRec only regresses its vectors.
  config.backbone.num_epochs = 40
  config.backbone.batch_size = 256
  return config


@pytest.fixture(scope='module')
def backbone_dir(tmp_path_factory):
  """One warm backbone shared by every method that reads one (trained on first use)."""
  return str(tmp_path_factory.mktemp('backbone'))


def _program(name, backbone_dir, **train_overrides):
  config = method_config(name, **train_overrides)
  config.backbone.run_dir = backbone_dir
  dataset = data_lib.load_dataset(config)
  extras = backbone.cf_vectors(config, backbone_dir, dataset)
  return config, dataset, train.EpochProgram(config, dataset, train.make_method(config, dataset),
                                             extras)


def _batches(program, count):
  triples = program.triples(1)
  return [jax.tree.map(lambda x, s=s: jnp.asarray(x[s]), triples) for s in range(count)]


def test_every_method_has_a_config_section_and_a_test_module():
  sections = set(tiny_config().methods)
  for name in METHODS:
    assert name == 'milk' or name in sections, f'configs/methods/{name}.py is missing'
    assert os.path.exists(os.path.join(os.path.dirname(__file__), f'test_{name}.py')), name


@pytest.mark.parametrize('name', METHODS)
def test_shapes_finite_loss_and_one_compilation(name, backbone_dir):
  config, dataset, program = _program(name, backbone_dir)
  state = program.fresh_state()
  users, items = program.vectors(state.params)
  chex.assert_rank([users, items], 2)
  assert users.shape[0] >= dataset.num_users and items.shape[0] == dataset.num_items
  assert users.shape[1] == items.shape[1]
  chex.clear_trace_counter()  # The counter is per code location, shared by the parameters.
  step = jax.jit(chex.assert_max_traces(train.make_train_step(config, program.method), n=1))
  for s, batch in enumerate(_batches(program, 3)):
    new_state, metrics = step(state, batch, jax.random.key(s), program.tables)
    assert int(new_state.step) == int(state.step) + 1
    chex.assert_trees_all_equal_shapes(new_state.params, state.params)
    chex.assert_tree_all_finite(metrics)
    assert metrics['loss'].shape == ()
    state = new_state


@pytest.mark.slow  # Thirty steps per method; the fast suite keeps the one-step contract.
@pytest.mark.parametrize('name', METHODS)
def test_loss_goes_down_on_one_batch(name, backbone_dir):
  config, _, program = _program(name, backbone_dir)
  state = program.fresh_state()
  batch = _batches(program, 1)[0]
  step = jax.jit(train.make_train_step(config, program.method))
  losses = []
  for s in range(30):
    state, metrics = step(state, batch, jax.random.key(s), program.tables)
    losses.append(float(metrics['loss']))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


@pytest.mark.parametrize('name', METHODS)
def test_new_items_do_not_read_any_cf_row(name, backbone_dir):
  """Scrambling every CF input (backbone rows, item id rows) leaves new items' vectors as they are."""
  config, dataset, program = _program(name, backbone_dir)
  params = program.fresh_state().params
  _, items = program.vectors(params)
  rng = np.random.default_rng(0)
  scrambled_tables = program.tables._replace(extras={
      k: jnp.asarray(rng.normal(size=v.shape), v.dtype) if k.startswith('cf_') else v
      for k, v in program.tables.extras.items()})
  new = np.union1d(dataset.val_items, dataset.test_items)
  # MICRO's new items aggregate warm items' id rows over content graphs, by design:
  # only the new items' own rows must not matter there.
  only_new_rows = methods.info(name).new_items_read_warm_rows
  def scramble(path, x):
    if 'item_embedding' not in jax.tree_util.keystr(path):
      return x
    noise = jnp.asarray(rng.normal(size=x.shape), x.dtype)
    return x.at[new].set(noise[new]) if only_new_rows else noise
  scrambled_params = jax.tree_util.tree_map_with_path(scramble, params)
  _, scrambled = program.embed(scrambled_params, scrambled_tables)
  np.testing.assert_allclose(np.asarray(scrambled)[new], np.asarray(items)[new], atol=1e-6)


@pytest.mark.parametrize('name', METHODS)
def test_new_items_embed_alone_as_in_the_catalogue(name, backbone_dir):
  """Served on their own after training (api.new_item_tables), new items get the vectors
  they had in the catalogue: what --mode=recommend relies on."""
  config, dataset, program = _program(name, backbone_dir)
  if program.method.serve_extras is None:  # Said plainly by api.Run (test_api.py).
    assert methods.info(name).no_serving_reason, name
    return
  params = program.fresh_state().params
  _, items = program.vectors(params)
  new = np.union1d(dataset.val_items, dataset.test_items)
  tables = api.new_item_tables(program.method, program.extras, dataset.warm_items,
                               dataset.num_items, tuple(f[new] for f in dataset.features),
                               dataset.availability[new], config.train.feature_dtype)
  _, alone = program.embed(params, tables)
  np.testing.assert_allclose(np.asarray(alone)[:new.size], np.asarray(items)[new], atol=1e-5)


@pytest.mark.slow  # A save and restore per method; slow resume tests restore too.
@pytest.mark.parametrize('name', METHODS)
def test_checkpoint_round_trip(name, backbone_dir, tmp_path):
  config, _, program = _program(name, backbone_dir)
  state = program.fresh_state()
  state, _ = jax.jit(train.make_train_step(config, program.method))(
      state, _batches(program, 1)[0], jax.random.key(0), program.tables)
  store = checkpoint.Checkpoints(str(tmp_path))
  store.save(checkpoint.LATEST, 1, {'state': loop_lib.state_tree(state)}, {'epoch': 1})
  store.wait()
  _, arrays, loop = store.restore_newest(checkpoint.LATEST,
                                         {'state': loop_lib.state_tree(program.fresh_state())})
  store.close()
  assert loop == {'epoch': 1}
  chex.assert_trees_all_equal(arrays['state'], loop_lib.state_tree(state))


class _Stop(Exception):
  pass


@pytest.mark.slow
@pytest.mark.parametrize('name', METHODS)
def test_resume_equals_an_uninterrupted_run_and_training_helps(name, backbone_dir, tmp_path):
  config = method_config(name, num_epochs=8, eval_every=2, patience=10)
  config.backbone.run_dir = backbone_dir
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))

  def stop_after_three(epoch, metrics):
    if epoch == 3:
      raise _Stop()

  with pytest.raises(_Stop):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'), epoch_callback=stop_after_three)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  for key in ('best_epoch', 'val', 'test', 'history'):
    assert resumed[key] == full[key], key
  def log(folder):
    return [{k: v for k, v in r.items() if k != 'seconds'}
            for r in runfolder.read_log(str(tmp_path / folder / 'metrics.jsonl'))]
  assert log('resumed') == log('full')
  if train.make_method(config, data_lib.load_dataset(config)).select_last:
    return  # The backbone does not score new items: its training is checked by its loss.
  untrained = full['history'][0]['val']['ndcg@20']
  assert full['val']['ndcg@20'] > untrained + 0.02, (untrained, full['val'])
