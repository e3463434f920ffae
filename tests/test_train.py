import json
import logging
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import data as data_lib
from milk_jax import checkpoint
from milk_jax import evaluate
from milk_jax import interrupt
from milk_jax import loop as loop_lib
from milk_jax import plots
from milk_jax import runfolder
from milk_jax import train
from milk_jax.methods import milk
from milk_jax.errors import ConfigError
from milk_jax.errors import DivergenceError
from milk_jax.errors import Interrupted
from milk_jax.errors import RunFolderError
from milk_jax.data import device_sampling
from tests import helpers
from tests.helpers import tiny_config


def _log(workdir):
  """The training log without wall-clock seconds: equal for equal runs."""
  records = runfolder.read_log(str(workdir / 'metrics.jsonl'))
  return [{k: v for k, v in r.items() if k != 'seconds'} for r in records]


def _batch(dataset, size, seed=0):
  rng = np.random.default_rng(seed)
  users, positives, negatives = data_lib.epoch_triples(rng, dataset, size)
  return {'users': users[0], 'positives': positives[0], 'negatives': negatives[0]}


@pytest.fixture(scope='module')
def setup():
  config = tiny_config()
  dataset = data_lib.load_dataset(config)
  method = train.make_method(config, dataset)
  state = train.create_train_state(config, method, jax.random.key(0), dataset.num_users)
  return config, dataset, state, train.tables_on_device(dataset)


def _step(config, dataset):
  return train.make_train_step(config, train.make_method(config, dataset))


def _epoch(config, dataset):
  return train.make_train_epoch(config, train.make_method(config, dataset))


def test_train_step_metrics_and_shapes(setup):
  config, dataset, state, item_data = setup
  step = jax.jit(_step(config, dataset))
  new_state, metrics = step(state, _batch(dataset, 64), jax.random.key(1), item_data)
  assert int(new_state.step) == 1
  chex.assert_trees_all_equal_shapes(new_state.params, state.params)
  chex.assert_tree_all_finite(metrics)
  assert set(metrics) == {'loss', 'bpr', 'env_variance', 'alignment', 'regulariser'}
  # The loss is assembled as Eq. 16 says.
  expected = (metrics['bpr'] + config.train.beta * metrics['env_variance']
              + config.train.align_weight * metrics['alignment']
              + config.train.reg_weight * metrics['regulariser'])
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)


def test_train_step_compiles_once(setup):
  config, dataset, state, item_data = setup
  step = chex.assert_max_traces(_step(config, dataset), n=1)
  step = jax.jit(step)
  for seed in range(3):
    state, _ = step(state, _batch(dataset, 64, seed), jax.random.key(seed), item_data)


def test_erm_has_no_variance_and_no_alignment(setup):
  config, dataset, state, item_data = setup
  config = tiny_config()
  config.model.use_invariance = False
  config.model.use_alignment = False
  _, metrics = jax.jit(_step(config, dataset))(
      state, _batch(dataset, 64), jax.random.key(1), item_data)
  assert float(metrics['env_variance']) == 0.0 and float(metrics['alignment']) == 0.0


def test_fixed_weights_ignore_the_step_key():
  config = tiny_config()
  config.model.resample_weights = False
  a = milk.step_weights(config, jax.random.key(1), 3)
  b = milk.step_weights(config, jax.random.key(2), 3)
  chex.assert_trees_all_close(a, b)
  config.model.resample_weights = True
  assert not np.allclose(milk.step_weights(config, jax.random.key(1), 3),
                         milk.step_weights(config, jax.random.key(2), 3))


def test_scanned_epoch_equals_step_by_step_loop(setup):
  config, dataset, state, item_data = setup
  rng = np.random.default_rng(5)
  users, positives, negatives = data_lib.epoch_triples(rng, dataset, 128)
  triples = {'users': users, 'positives': positives, 'negatives': negatives}
  train_key = jax.random.key(9)
  step = jax.jit(_step(config, dataset))
  looped = state
  for s in range(users.shape[0]):
    batch = jax.tree.map(lambda x: x[s], triples)
    looped, _ = step(looped, batch, train_key, item_data)
  copy = jax.tree.map(jnp.copy, state)  # The epoch donates its input state.
  scanned, metrics = _epoch(config, dataset)(copy, triples, train_key, item_data)
  chex.assert_trees_all_close(scanned.params, looped.params, rtol=1e-5, atol=1e-6)
  assert int(scanned.step) == users.shape[0]
  chex.assert_tree_all_finite(metrics)


def test_device_epoch_matches_the_host_epoch_on_the_same_triples(setup):
  # The device program samples its own triples; fed those same triples, the
  # host-path epoch must land on the same parameters.
  config, dataset, state, item_data = setup
  tables = device_sampling.sampler_tables(dataset, 'warm')
  steps = device_sampling.search_steps(dataset)
  sample_key, train_key = jax.random.key(4), jax.random.key(9)
  triples = device_sampling.epoch_triples(sample_key, tables, config.train.batch_size, steps)
  host, _ = _epoch(config, dataset)(jax.tree.map(jnp.copy, state), triples, train_key,
                                    item_data)
  device_epoch = train.make_device_epoch(config, train.make_method(config, dataset), steps)
  fused, _ = device_epoch(jax.tree.map(jnp.copy, state), sample_key, train_key, item_data,
                          tables)
  chex.assert_trees_all_close(fused.params, host.params, rtol=1e-5, atol=1e-6)


def test_bfloat16_features_keep_float32_parameters_and_close_losses(setup):
  config, dataset, state, item_data = setup
  batch = _batch(dataset, 64)
  step = jax.jit(_step(config, dataset))
  _, full = step(state, batch, jax.random.key(1), item_data)
  half_data = train.tables_on_device(dataset, 'bfloat16')
  assert half_data.features[0].dtype == jnp.bfloat16
  new_state, half = step(state, batch, jax.random.key(1), half_data)
  chex.assert_trees_all_equal_dtypes(new_state.params, state.params)
  # bfloat16 keeps 8 bits of mantissa: the loss agrees to about 1%.
  np.testing.assert_allclose(half['loss'], full['loss'], rtol=2e-2)


@pytest.mark.parametrize('sampler', ['host', 'device'])
def test_training_beats_the_untrained_model(tmp_path, sampler):
  # Enough new items (100) that a random ranking scores far below the ceiling.
  config = tiny_config(num_epochs=30, eval_every=5, patience=3, sampler=sampler)
  config.data.synthetic.num_items = 500
  config.data.synthetic.num_users = 300
  helpers.assert_training_beats_untrained(config, tmp_path)


def test_results_contract(tmp_path):
  config = tiny_config(num_epochs=2)
  train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  assert isinstance(results['best_epoch'], int)
  for split in ('val', 'test'):
    for key in ('recall@10', 'ndcg@10', 'recall@20', 'ndcg@20'):
      assert 0.0 <= results[split][key] <= 1.0
  assert set(results['test_by_group']) == {'full', 'missing_1'}
  assert results['train_seconds'] > 0
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['train']['beta'] == config.train.beta


def test_a_run_writes_its_id_maps(tmp_path):
  config = tiny_config(num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path))
  for name, count in (('users.tsv', config.data.synthetic.num_users),
                      ('items.tsv', config.data.synthetic.num_items)):
    lines = (tmp_path / name).read_text().splitlines()
    assert lines[:3] == ['index\tid', '0\t0', '1\t1'] and len(lines) == count + 1, name


@pytest.mark.slow  # Three runs per sampler.
@pytest.mark.parametrize('sampler', ['host', 'device'])
def test_resume_gives_the_same_results_as_an_uninterrupted_run(tmp_path, sampler):
  config = tiny_config(num_epochs=6, eval_every=2, patience=5, sampler=sampler)
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))

  class Interrupt(Exception):
    pass

  def stop_after_three(epoch, metrics):
    if epoch == 3:
      raise Interrupt()

  with pytest.raises(Interrupt):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'), epoch_callback=stop_after_three)
  assert not os.path.exists(tmp_path / 'resumed' / 'results.json')
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  for key in ('best_epoch', 'val', 'test', 'test_by_group', 'history'):
    assert resumed[key] == full[key], key
  assert _log(tmp_path / 'resumed') == _log(tmp_path / 'full')
  # Training time adds up over the interruption; running a finished run again keeps it.
  assert resumed['train_seconds'] > 0
  again = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert again['train_seconds'] == resumed['train_seconds'] and again['test'] == full['test']


def test_interrupted_before_the_first_latest_checkpoint(tmp_path):
  config = tiny_config(num_epochs=3, eval_every=1, checkpoint_every=2)
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))

  def stop(epoch, metrics):
    raise KeyboardInterrupt()

  # Epoch 1 saved a best checkpoint but no latest one yet.
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path / 'again'), epoch_callback=stop)
  again = train.train_and_evaluate(config, str(tmp_path / 'again'))
  assert again['test'] == full['test'] and again['best_epoch'] == full['best_epoch']
  # The log starts over too: no record of the dead attempt, epoch 0's included.
  assert again['history'] == full['history']
  assert _log(tmp_path / 'again') == _log(tmp_path / 'full')


def test_workdir_of_another_run_is_refused(tmp_path):
  config = tiny_config(num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path))
  before = (tmp_path / 'results.json').read_text()
  other = tiny_config(num_epochs=1, beta=3.0)
  with pytest.raises(ValueError, match='different config'):
    train.train_and_evaluate(other, str(tmp_path))
  no_resume = tiny_config(num_epochs=1, resume=False)
  with pytest.raises(ValueError, match='resume'):
    train.train_and_evaluate(no_resume, str(tmp_path))
  assert (tmp_path / 'results.json').read_text() == before


@pytest.mark.parametrize('field, value, message', [
    ('select_metric', 'ndcg@7', 'select_metric'),
    ('batch_size', 0, 'batch_size'),
    ('reg_target', 'weights', 'reg_target'),
    ('learning_rate', 0.0, r'learning_rate=0.0: must be positive'),
    ('learning_rate', -1.0, r'learning_rate=-1.0: must be positive'),
    ('num_epochs', 0, r'num_epochs=0: must be at least 1'),
])
def test_bad_config_values_fail_before_training(tmp_path, field, value, message):
  config = tiny_config(**{field: value})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_eval_mode_restores_the_best_checkpoint(tmp_path):
  config = tiny_config(num_epochs=4)
  results = train.train_and_evaluate(config, str(tmp_path))
  evaluated = train.evaluate_checkpoint(config, str(tmp_path))
  assert evaluated['epoch'] == results['best_epoch']
  for key, value in results['test'].items():
    assert evaluated['test'][key] == pytest.approx(value, rel=1e-5)
  with pytest.raises(RunFolderError, match='no checkpoints under .*nothing: train first'):
    train.evaluate_checkpoint(config, str(tmp_path / 'nothing'))
  assert not os.path.exists(tmp_path / 'nothing')


def test_bad_data_leaves_an_existing_run_intact(tmp_path):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_config(num_epochs=1), str(workdir))
  written = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}

  folder = tmp_path / 'data'
  folder.mkdir()
  (folder / 'interactions.tsv').write_text('user\titem\n0\t1\n1\t2\n')
  features = np.ones((4, 3), np.float32)
  features[2, 1] = np.nan
  np.save(folder / 'image_feat.npy', features)
  np.save(folder / 'text_feat.npy', np.ones((4, 2), np.float32))
  config = tiny_config(num_epochs=1)
  config.data.format = 'interactions'
  config.data.path = str(folder)
  with pytest.raises(data_lib.DataError, match='image_feat.npy'):
    train.train_and_evaluate(config, str(workdir))
  assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == written


def test_three_modalities_with_missing_groups(tmp_path):
  config = tiny_config(num_epochs=2)
  config.data.modalities = ('image', 'text', 'audio')
  config.data.synthetic.feature_dims = (24, 12, 6)
  config.data.setting = 'groups'
  results = train.train_and_evaluate(config, str(tmp_path))
  assert set(results['test_by_group']) == {'full', 'missing_1', 'missing_2'}
  chex.assert_tree_all_finite(jax.tree.map(np.asarray, results['test']))


def test_a_diverging_run_stops_with_a_clear_message(tmp_path):
  # A learning rate this large overflows the parameters to inf within the first epoch.
  config = tiny_config(num_epochs=3, learning_rate=1e38)
  with pytest.raises(DivergenceError, match='training diverged at epoch 1: the loss is not finite'):
    train.train_and_evaluate(config, str(tmp_path))


def test_candidates_all_new_or_the_splits_own(setup):
  _, dataset, _, _ = setup
  all_new = evaluate.candidate_items(dataset, 'test', 'all_new')
  np.testing.assert_array_equal(all_new, np.union1d(dataset.val_items, dataset.test_items))
  np.testing.assert_array_equal(evaluate.candidate_items(dataset, 'val', 'split'), dataset.val_items)
  np.testing.assert_array_equal(evaluate.candidate_items(dataset, 'test', 'split'),
                                dataset.test_items)


def test_check_divergence_counts_epochs_far_above_the_first_loss():
  config = tiny_config(divergence_factor=10.0, divergence_epochs=2)
  loop = loop_lib.initial_loop_state(config)
  parts = {'bpr': 0.5, 'env_variance': 0.0, 'alignment': 0.1, 'regulariser': 0.0}
  loop_lib.check_divergence(config, loop, 1, {'loss': 2.0, **parts}, 'best')
  assert loop['first_loss'] == 2.0
  loop_lib.check_divergence(config, loop, 2, {'loss': 25.0, **parts}, 'best')  # 25 > 10 x 2.
  assert loop['epochs_above'] == 1
  loop_lib.check_divergence(config, loop, 3, {'loss': 19.0, **parts}, 'best')  # Back below 20.
  assert loop['epochs_above'] == 0
  loop_lib.check_divergence(config, loop, 4, {'loss': 21.0, **parts}, 'best')
  with pytest.raises(DivergenceError, match=r'epoch 5: the loss \(30\) has stayed above 10 x the '
                     r"first epoch's \(2\) for 2 epochs"):
    loop_lib.check_divergence(config, loop, 5, {'loss': 30.0, **parts}, 'best')
  with pytest.raises(DivergenceError, match=r'epoch 6: the loss is not finite \(bpr inf\)'):
    loop_lib.check_divergence(config, loop, 6, {'loss': 3.0, **dict(parts, bpr=float('inf'))}, 'b')


def test_an_exploding_loss_stops_the_run_and_keeps_its_best(tmp_path):
  config = tiny_config(num_epochs=20, eval_every=2, patience=20, learning_rate=100.0)
  with pytest.raises(DivergenceError, match=r'training diverged at epoch \d+: the loss .* has '
                     r'stayed above 10 x .*learning_rate \(now 100\).*best checkpoint'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'results.json').exists()
  assert checkpoint.Checkpoints(str(tmp_path)).epochs(checkpoint.BEST)
  assert train.evaluate_checkpoint(config, str(tmp_path))['test']['num_users'] > 0


def test_latest_saved_at_evaluations_and_compile_time_kept_apart(tmp_path):
  config = tiny_config(num_epochs=5, eval_every=2, patience=5)
  results = train.train_and_evaluate(config, str(tmp_path))
  # Saved at epochs 2 and 4 (evaluations) and 5 (the end); the newest two are kept.
  assert checkpoint.Checkpoints(str(tmp_path)).epochs(checkpoint.LATEST) == [5, 4]
  assert results['compile_seconds'] > 0
  epoch_seconds = [r['seconds'] for r in runfolder.read_log(str(tmp_path / 'metrics.jsonl'))
                   if r['kind'] == 'train']
  assert results['train_seconds'] == pytest.approx(sum(epoch_seconds))


def test_a_missing_or_stale_best_checkpoint_is_repaired_on_resume(tmp_path, caplog):
  config = tiny_config(num_epochs=4, eval_every=1, patience=5)
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  checkpoints = checkpoint.Checkpoints(str(workdir))
  checkpoints.discard(checkpoint.BEST)  # As if the run died before its best save landed.
  checkpoints.close()
  again = train.train_and_evaluate(config, str(workdir))
  assert 'checkpoints/best is missing' in caplog.text
  assert again['test'] == full['test']
  evaluated = train.evaluate_checkpoint(config, str(workdir))
  assert evaluated['epoch'] == full['best_epoch']
  assert evaluated['test'] == pytest.approx(full['test'])


def test_an_interrupt_request_stops_at_the_epoch_boundary_and_resumes_exactly(tmp_path):
  config = tiny_config(num_epochs=5, eval_every=2, patience=5)
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))

  def ctrl_c_during_epoch_3(epoch, metrics):
    if epoch == 3:
      interrupt.request()

  try:
    with pytest.raises(Interrupted, match='interrupted at epoch 3; run the same command'):
      train.train_and_evaluate(config, str(tmp_path / 'run'), epoch_callback=ctrl_c_during_epoch_3)
  finally:
    interrupt.clear()
  assert checkpoint.Checkpoints(str(tmp_path / 'run')).epochs(checkpoint.LATEST)[0] == 3
  resumed = train.train_and_evaluate(config, str(tmp_path / 'run'))
  for key in ('best_epoch', 'val', 'test', 'history'):
    assert resumed[key] == full[key], key
  assert _log(tmp_path / 'run') == _log(tmp_path / 'full')


def test_a_run_folder_in_use_is_refused(tmp_path):
  with runfolder.lock(str(tmp_path)):
    with pytest.raises(RunFolderError, match='in use by another process'):
      train.train_and_evaluate(tiny_config(num_epochs=1), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == [runfolder.LOCK_FILE]


def test_a_finished_run_continues_to_more_epochs_exactly(tmp_path):
  longer = tiny_config(num_epochs=6, eval_every=2, patience=5)
  full = train.train_and_evaluate(longer, str(tmp_path / 'full'))
  train.train_and_evaluate(tiny_config(num_epochs=4, eval_every=2, patience=5),
                           str(tmp_path / 'run'))
  continued = train.train_and_evaluate(longer, str(tmp_path / 'run'))
  for key in ('best_epoch', 'epochs_run', 'val', 'test', 'history'):
    assert continued[key] == full[key], key
  with pytest.raises(ConfigError, match='has trained 6 epochs, more than '
                     'config.train.num_epochs=3'):
    train.train_and_evaluate(tiny_config(num_epochs=3, eval_every=2, patience=5),
                             str(tmp_path / 'run'))
  assert runfolder.saved_config(str(tmp_path / 'run'))['train']['num_epochs'] == 6


def test_given_setting_trains_on_the_declared_mask(tmp_path):
  # 3 modalities; item i misses none, one or two of them by i % 3.
  rng = np.random.default_rng(0)
  num_users, num_items = 80, 60
  for name, dim in (('image', 6), ('audio', 4), ('text', 3)):
    np.save(tmp_path / f'{name}_feat.npy', rng.standard_normal((num_items, dim), np.float32))
  declared = np.ones((num_items, 3), bool)
  declared[np.arange(num_items) % 3 == 1, 0] = False
  declared[np.arange(num_items) % 3 == 2, :2] = False
  np.save(tmp_path / 'availability.npy', declared)
  rows = [f'{u}\t{i}' for u in range(num_users) for i in range(num_items) if rng.random() < 0.3]
  (tmp_path / 'interactions.tsv').write_text('user\titem\n' + '\n'.join(rows) + '\n')
  config = tiny_config(num_epochs=2)
  config.data.update(format='interactions', path=str(tmp_path), setting='given',
                     modalities=('image', 'audio', 'text'))
  dataset = data_lib.load_dataset(config)
  np.testing.assert_array_equal(dataset.availability, declared)
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  groups = np.unique((~declared).sum(axis=1)[dataset.test_pairs[:, 1]])
  assert set(results['test_by_group']) == {evaluate.group_name(int(g)) for g in groups}
  assert set(results['test_by_group']) == {'full', 'missing_1', 'missing_2'}
  assert results['missing'] == dataset.missing_report()


def _messages(caplog):
  return [r.getMessage() for r in caplog.records if r.name.startswith('milk_jax')]


def test_a_run_logs_its_time_left_its_early_stop_and_where_its_results_went(tmp_path, caplog):
  # A step this small leaves the parameters as they are in float32: no evaluation beats
  # epoch 0's, so patience 2 ends the run after epoch 2 of 6.
  config = tiny_config(num_epochs=6, eval_every=1, patience=2, learning_rate=1e-12)
  caplog.set_level(logging.INFO, logger='milk_jax')
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['stopped_early'] and results['best_epoch'] == 0 and results['epochs_run'] == 2
  messages = _messages(caplog)
  epochs = [m for m in messages if m.startswith('epoch ')]
  assert [m.split()[1] for m in epochs] == ['1/6', '2/6']
  assert all(re.search(r'triples/s, eta \d+s$', m) for m in epochs), epochs
  assert ('stopped early at epoch 2/6: no improvement in 2 evaluations since epoch 0 '
          '(config.train.patience)') in messages
  path = tmp_path / 'results.json'
  assert messages[-1] == (f"results: {path} (best epoch 0, val ndcg@20 "
                          f"{results['val']['ndcg@20']:.4f}, test ndcg@20 "
                          f"{results['test']['ndcg@20']:.4f})")
  assert f"training curves: {tmp_path / 'curves.png'}" in messages
  with open(tmp_path / 'curves.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_the_time_left_is_the_epochs_left_times_the_mean_epoch():
  training = object.__new__(loop_lib.Training)  # Only the config and the epoch times.
  training.config = tiny_config(num_epochs=10)
  training.epoch_walls = []
  assert training._eta(1, 5.0) == ', eta 45s'  # No epoch finished yet: this one's time.
  training.epoch_walls = [2.0, 4.0, 30.0]
  assert training._eta(4, 1.0) == ', eta 1m12s'  # 6 epochs x 12 s.
  assert training._eta(10, 1.0) == ''  # The last epoch.
  assert [loop_lib.format_duration(s) for s in (0.4, 42, 59.6, 80, 3599, 7500)] == [
      '0s', '42s', '1m00s', '1m20s', '59m59s', '2h05m']


def test_a_failed_drawing_of_the_curves_is_a_warning(tmp_path, monkeypatch, caplog):
  def broken(*args, **kwargs):
    raise RuntimeError('no fonts')
  monkeypatch.setattr(plots, 'training_curves', broken)
  train._write_curves(str(tmp_path), tiny_config(), [], 0)  # pylint: disable=protected-access
  assert 'could not draw' in caplog.text and 'RuntimeError: no fonts' in caplog.text
  assert not (tmp_path / 'curves.png').exists()
