"""The contract every registered method keeps (optax's shared-test pattern).

Each module under milk_jax/methods/ is checked: its INFO (a MethodInfo whose
fields, backbone and serving facts agree with the method), then on the tiny
synthetic catalogue: shapes, a finite loss, one compilation, a loss that goes
down, a checkpoint round trip, new items' vectors free of any CF row, and
(slow) exact resume and a short run that beats the untrained model.
"""

import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import api
from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import methods
from milk_jax import run as run_lib
from milk_jax import runfolder
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

METHODS = methods.names()
# A config field: dotted names ('train.beta'), or a section's prefix ('methods.gar.').
DOTTED = re.compile(r'[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*\.?')


@pytest.fixture(scope='module')
def backbone_dir(tmp_path_factory):
  """One warm backbone shared by every method that reads one (trained on first use)."""
  return str(tmp_path_factory.mktemp('backbone'))


@pytest.fixture(scope='module')
def contract_config(make_config, backbone_dir):
  """contract_config(name, **train) -> the small config training `name` on the shared backbone."""
  def build(name: str, **train):
    config = make_config(name, train=train)
    # A backbone with signal (training AUC about 0.83): GoRec only regresses its vectors.
    config.backbone.num_epochs = 40
    config.backbone.batch_size = 256
    config.backbone.run_dir = backbone_dir
    return config
  return build


@pytest.fixture(scope='module')
def make_program(contract_config, backbone_dir):
  """make_program(name) -> (config, dataset, EpochProgram) with the backbone's vectors."""
  def build(name: str):
    config = contract_config(name)
    dataset = data_lib.load_dataset(config)
    extras = run_lib.cf_vectors(config, backbone_dir, dataset)
    return config, dataset, step_lib.EpochProgram(config, dataset,
                                                  state_lib.make_method(config, dataset), extras)
  return build


def _batches(program, count):
  triples = program.triples(1)
  return [jax.tree.map(lambda x, s=s: jnp.asarray(x[s]), triples) for s in range(count)]


def _has_field(config, field: str) -> bool:
  node = config
  for part in field.rstrip('.').split('.'):
    if part not in node:
      return False
    node = node[part]
  return True


@pytest.mark.parametrize('name', METHODS)
def test_info_is_a_method_info_that_agrees_with_the_method(name, make_config, two_tower):
  info = methods.get(name).INFO
  assert isinstance(info, methods.MethodInfo), name
  assert isinstance(info.display_name, str) and info.display_name.strip(), name
  assert [m for m in METHODS if methods.info(m).display_name == info.display_name] == [name]
  assert info.fields and all(DOTTED.fullmatch(f) for f in info.fields), info.fields
  assert all(DOTTED.fullmatch(f) and not f.endswith('.') for f in info.divergence_fields)
  # The backbone is a method of its own that reads no backbone.
  assert info.backbone is None or (info.backbone in METHODS and info.backbone != name
                                   and methods.info(info.backbone).backbone is None), name
  # A reason why items that arrive after training cannot be served, exactly when they cannot:
  # no serving hook, or a warm-only method (its vectors do not score new items).
  method = methods.get(name).make(make_config(name), two_tower.SPEC)
  cannot_serve = method.serve_extras is None or method.select_last
  assert (info.no_serving_reason is not None) == cannot_serve, name
  assert info.no_serving_reason is None or info.no_serving_reason.strip(), name


def test_every_method_declares_fields_the_config_has_and_has_a_test_module(make_config):
  # A baseline declares its configs/methods/<name>.py section, MILK its historical fields.
  config = make_config()
  for name in METHODS:
    assert methods.info(name).fields, name
    for field in methods.info(name).fields:
      assert _has_field(config, field), f'{name}: config.{field} is missing'
    here = os.path.dirname(__file__)
    assert (os.path.exists(os.path.join(here, f'test_{name}.py'))
            or os.path.exists(os.path.join(here, name, f'test_{name}.py'))), name


@pytest.mark.parametrize('name', METHODS)
def test_shapes_finite_loss_and_one_compilation(name, make_program):
  config, dataset, program = make_program(name)
  state = program.fresh_state()
  users, items = program.vectors(state.variables)
  chex.assert_rank([users, items], 2)
  assert users.shape[0] >= dataset.num_users and items.shape[0] == dataset.num_items
  assert users.shape[1] == items.shape[1]
  chex.clear_trace_counter()  # The counter is per code location, shared by the parameters.
  step = jax.jit(chex.assert_max_traces(step_lib.make_train_step(config, program.method), n=1))
  for s, batch in enumerate(_batches(program, 3)):
    new_state, metrics = step(state, batch, jax.random.key(s), program.tables)
    assert int(new_state.step) == int(state.step) + 1
    chex.assert_trees_all_equal_shapes(new_state.params, state.params)
    chex.assert_tree_all_finite(metrics)
    assert metrics['loss'].shape == ()
    state = new_state


@pytest.mark.slow  # Thirty steps per method; the fast suite keeps the one-step contract.
@pytest.mark.parametrize('name', METHODS)
def test_loss_goes_down_on_one_batch(name, make_program):
  config, _, program = make_program(name)
  state = program.fresh_state()
  batch = _batches(program, 1)[0]
  step = jax.jit(step_lib.make_train_step(config, program.method))
  losses = []
  for s in range(30):
    state, metrics = step(state, batch, jax.random.key(s), program.tables)
    losses.append(float(metrics['loss']))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


@pytest.mark.parametrize('name', METHODS)
def test_new_items_do_not_read_any_cf_row(name, make_program):
  """Scrambling every CF input (backbone rows, item id rows) leaves new items' vectors as they
  are."""
  config, dataset, program = make_program(name)
  params = program.fresh_state().variables
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
def test_new_items_embed_alone_as_in_the_catalogue(name, make_program):
  """Served on their own after training (api.new_item_tables), new items get the vectors
  they had in the catalogue: what --mode=recommend relies on."""
  config, dataset, program = make_program(name)
  if program.method.serve_extras is None:  # Said plainly by api.Run (test_api.py).
    assert methods.info(name).no_serving_reason, name
    return
  params = program.fresh_state().variables
  _, items = program.vectors(params)
  new = np.union1d(dataset.val_items, dataset.test_items)
  tables = api.new_item_tables(program.method, program.extras, dataset.warm_items,
                               dataset.num_items, tuple(f[new] for f in dataset.features),
                               dataset.availability[new], config.train.feature_dtype)
  _, alone = program.embed(params, tables)
  np.testing.assert_allclose(np.asarray(alone)[:new.size], np.asarray(items)[new], atol=1e-5)


@pytest.mark.slow  # A save and restore per method; slow resume tests restore too.
@pytest.mark.parametrize('name', METHODS)
def test_checkpoint_round_trip(name, make_program, tmp_path):
  config, _, program = make_program(name)
  state = program.fresh_state()
  state, _ = jax.jit(step_lib.make_train_step(config, program.method))(
      state, _batches(program, 1)[0], jax.random.key(0), program.tables)
  store = checkpoint.Checkpoints(str(tmp_path))
  store.save(checkpoint.LATEST, 1, {'state': checkpoint.state_tree(state)}, {'epoch': 1})
  store.wait()
  _, arrays, loop = store.restore_newest(checkpoint.LATEST,
                                         {'state': checkpoint.state_tree(program.fresh_state())})
  store.close()
  assert loop == {'epoch': 1}
  chex.assert_trees_all_equal(arrays['state'], checkpoint.state_tree(state))



@pytest.mark.slow
@pytest.mark.parametrize('name', METHODS)
def test_resume_equals_an_uninterrupted_run_and_training_helps(name, contract_config, tmp_path,
                                                              interrupted_run):
  config = contract_config(name, num_epochs=8, eval_every=2, patience=10)
  full = run_lib.train_and_evaluate(config, str(tmp_path / 'full'))
  interrupted_run(run_lib.train_and_evaluate, config, str(tmp_path / 'resumed'), after_epoch=3)
  resumed = run_lib.train_and_evaluate(config, str(tmp_path / 'resumed'))
  for key in ('best_epoch', 'val', 'test', 'history'):
    assert resumed[key] == full[key], key
  def log(folder):
    return [{k: v for k, v in r.items() if k != 'seconds'}
            for r in runfolder.read_log(str(tmp_path / folder / 'metrics.jsonl'))]
  assert log('resumed') == log('full')
  if state_lib.make_method(config, data_lib.load_dataset(config)).select_last:
    return  # The backbone does not score new items: its training is checked by its loss.
  untrained = full['history'][0]['val']['ndcg@20']
  assert full['val']['ndcg@20'] > untrained + 0.02, (untrained, full['val'])
