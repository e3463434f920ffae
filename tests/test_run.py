"""A run end to end: the results contract, resume, refusals, divergence, the log and files."""

import json
import logging
import os
import re

import chex
import jax
import numpy as np
import pytest

from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import evaluate
from milk_jax import interrupt
from milk_jax import plots
from milk_jax import run as run_lib
from milk_jax import runfolder
from milk_jax.errors import ConfigError
from milk_jax.errors import DivergenceError
from milk_jax.errors import Interrupted
from milk_jax.errors import RunFolderError


def _log(workdir):
  """The training log without wall-clock seconds: equal for equal runs."""
  records = runfolder.read_log(str(workdir / 'metrics.jsonl'))
  return [{k: v for k, v in r.items() if k != 'seconds'} for r in records]


@pytest.mark.parametrize('sampler', ['host', 'device'])
def test_training_beats_the_untrained_model(tmp_path, sampler, assert_training_beats_untrained,
                                            make_config):
  # Enough new items (100) that a random ranking scores far below the ceiling.
  config = make_config(train={'num_epochs': 30, 'eval_every': 5, 'patience': 3, 'sampler': sampler})
  config.data.synthetic.num_items = 500
  config.data.synthetic.num_users = 300
  assert_training_beats_untrained(config, tmp_path)


def test_results_contract(tmp_path, make_config):
  config = make_config(train={'num_epochs': 2})
  run_lib.train_and_evaluate(config, str(tmp_path))
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


def test_a_run_writes_its_id_maps(tmp_path, make_config):
  config = make_config(train={'num_epochs': 1})
  run_lib.train_and_evaluate(config, str(tmp_path))
  for name, count in (('users.tsv', config.data.synthetic.num_users),
                      ('items.tsv', config.data.synthetic.num_items)):
    lines = (tmp_path / name).read_text().splitlines()
    assert lines[:3] == ['index\tid', '0\t0', '1\t1'] and len(lines) == count + 1, name


@pytest.mark.slow  # Three runs per sampler.
@pytest.mark.parametrize('sampler', ['host', 'device'])
def test_resume_gives_the_same_results_as_an_uninterrupted_run(tmp_path, sampler, make_config):
  config = make_config(train={'num_epochs': 6, 'eval_every': 2, 'patience': 5, 'sampler': sampler})
  full = run_lib.train_and_evaluate(config, str(tmp_path / 'full'))

  class Interrupt(Exception):
    pass

  def stop_after_three(epoch, metrics):
    if epoch == 3:
      raise Interrupt()

  with pytest.raises(Interrupt):
    run_lib.train_and_evaluate(config, str(tmp_path / 'resumed'), epoch_callback=stop_after_three)
  assert not os.path.exists(tmp_path / 'resumed' / 'results.json')
  resumed = run_lib.train_and_evaluate(config, str(tmp_path / 'resumed'))
  for key in ('best_epoch', 'val', 'test', 'test_by_group', 'history'):
    assert resumed[key] == full[key], key
  assert _log(tmp_path / 'resumed') == _log(tmp_path / 'full')
  # Training time adds up over the interruption; running a finished run again keeps it.
  assert resumed['train_seconds'] > 0
  again = run_lib.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert again['train_seconds'] == resumed['train_seconds'] and again['test'] == full['test']


def test_interrupted_before_the_first_latest_checkpoint(tmp_path, make_config):
  config = make_config(train={'num_epochs': 3, 'eval_every': 1, 'checkpoint_every': 2})
  full = run_lib.train_and_evaluate(config, str(tmp_path / 'full'))

  def stop(epoch, metrics):
    raise KeyboardInterrupt()

  # Epoch 1 saved a best checkpoint but no latest one yet.
  with pytest.raises(KeyboardInterrupt):
    run_lib.train_and_evaluate(config, str(tmp_path / 'again'), epoch_callback=stop)
  again = run_lib.train_and_evaluate(config, str(tmp_path / 'again'))
  assert again['test'] == full['test'] and again['best_epoch'] == full['best_epoch']
  # The log starts over too: no record of the dead attempt, epoch 0's included.
  assert again['history'] == full['history']
  assert _log(tmp_path / 'again') == _log(tmp_path / 'full')


def test_workdir_of_another_run_is_refused(tmp_path, make_config):
  config = make_config(train={'num_epochs': 1})
  run_lib.train_and_evaluate(config, str(tmp_path))
  before = (tmp_path / 'results.json').read_text()
  other = make_config(train={'num_epochs': 1, 'beta': 3.0})
  with pytest.raises(ValueError, match='different config'):
    run_lib.train_and_evaluate(other, str(tmp_path))
  no_resume = make_config(train={'num_epochs': 1, 'resume': False})
  with pytest.raises(ValueError, match='resume'):
    run_lib.train_and_evaluate(no_resume, str(tmp_path))
  assert (tmp_path / 'results.json').read_text() == before


@pytest.mark.parametrize('field, value, message', [
    ('select_metric', 'ndcg@7', 'select_metric'),
    ('batch_size', 0, 'batch_size'),
    ('reg_target', 'weights', 'reg_target'),
    ('learning_rate', 0.0, r'learning_rate=0.0: must be positive'),
    ('learning_rate', -1.0, r'learning_rate=-1.0: must be positive'),
    ('num_epochs', 0, r'num_epochs=0: must be at least 1'),
])
def test_bad_config_values_fail_before_training(tmp_path, field, value, message, make_config):
  config = make_config(train={field: value})
  with pytest.raises(ValueError, match=message):
    run_lib.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_eval_mode_restores_the_best_checkpoint(tmp_path, make_config):
  config = make_config(train={'num_epochs': 4})
  results = run_lib.train_and_evaluate(config, str(tmp_path))
  evaluated = run_lib.evaluate_checkpoint(config, str(tmp_path))
  assert evaluated['epoch'] == results['best_epoch']
  for key, value in results['test'].items():
    assert evaluated['test'][key] == pytest.approx(value, rel=1e-5)
  with pytest.raises(RunFolderError, match='no checkpoints under .*nothing: train first'):
    run_lib.evaluate_checkpoint(config, str(tmp_path / 'nothing'))
  assert not os.path.exists(tmp_path / 'nothing')


def test_bad_data_leaves_an_existing_run_intact(tmp_path, make_config):
  workdir = tmp_path / 'run'
  run_lib.train_and_evaluate(make_config(train={'num_epochs': 1}), str(workdir))
  written = {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()}

  folder = tmp_path / 'data'
  folder.mkdir()
  (folder / 'interactions.tsv').write_text('user\titem\n0\t1\n1\t2\n')
  features = np.ones((4, 3), np.float32)
  features[2, 1] = np.nan
  np.save(folder / 'image_feat.npy', features)
  np.save(folder / 'text_feat.npy', np.ones((4, 2), np.float32))
  config = make_config(train={'num_epochs': 1})
  config.data.format = 'interactions'
  config.data.path = str(folder)
  with pytest.raises(data_lib.DataError, match='image_feat.npy'):
    run_lib.train_and_evaluate(config, str(workdir))
  assert {p: p.read_bytes() for p in workdir.rglob('*') if p.is_file()} == written


def test_three_modalities_with_missing_groups(tmp_path, make_config):
  config = make_config(train={'num_epochs': 2})
  config.data.modalities = ('image', 'text', 'audio')
  config.data.synthetic.feature_dims = (24, 12, 6)
  config.data.setting = 'groups'
  results = run_lib.train_and_evaluate(config, str(tmp_path))
  assert set(results['test_by_group']) == {'full', 'missing_1', 'missing_2'}
  chex.assert_tree_all_finite(jax.tree.map(np.asarray, results['test']))


def test_a_diverging_run_stops_with_a_clear_message(tmp_path, make_config):
  # A learning rate this large overflows the parameters to inf within the first epoch.
  config = make_config(train={'num_epochs': 3, 'learning_rate': 1e38})
  with pytest.raises(DivergenceError, match='training diverged at epoch 1: the loss is not finite'):
    run_lib.train_and_evaluate(config, str(tmp_path))


def test_an_exploding_loss_stops_the_run_and_keeps_its_best(tmp_path, make_config):
  config = make_config(train={'num_epochs': 20, 'eval_every': 2, 'patience': 20,
                              'learning_rate': 100.0})
  with pytest.raises(DivergenceError, match=r'training diverged at epoch \d+: the loss .* has '
                     r'stayed above 10 x .*learning_rate \(now 100\).*best checkpoint'):
    run_lib.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'results.json').exists()
  assert checkpoint.Checkpoints(str(tmp_path)).epochs(checkpoint.BEST)
  assert run_lib.evaluate_checkpoint(config, str(tmp_path))['test']['num_users'] > 0


def test_latest_saved_at_evaluations_and_compile_time_kept_apart(tmp_path, make_config):
  config = make_config(train={'num_epochs': 5, 'eval_every': 2, 'patience': 5})
  results = run_lib.train_and_evaluate(config, str(tmp_path))
  # Saved at epochs 2 and 4 (evaluations) and 5 (the end); the newest two are kept.
  assert checkpoint.Checkpoints(str(tmp_path)).epochs(checkpoint.LATEST) == [5, 4]
  assert results['compile_seconds'] > 0
  epoch_seconds = [r['seconds'] for r in runfolder.read_log(str(tmp_path / 'metrics.jsonl'))
                   if r['kind'] == 'train']
  assert results['train_seconds'] == pytest.approx(sum(epoch_seconds))


def test_a_missing_or_stale_best_checkpoint_is_repaired_on_resume(tmp_path, caplog, make_config):
  config = make_config(train={'num_epochs': 4, 'eval_every': 1, 'patience': 5})
  full = run_lib.train_and_evaluate(config, str(tmp_path / 'full'))
  workdir = tmp_path / 'run'
  run_lib.train_and_evaluate(config, str(workdir))
  checkpoints = checkpoint.Checkpoints(str(workdir))
  checkpoints.discard(checkpoint.BEST)  # As if the run died before its best save landed.
  checkpoints.close()
  again = run_lib.train_and_evaluate(config, str(workdir))
  assert 'checkpoints/best is missing' in caplog.text
  assert again['test'] == full['test']
  evaluated = run_lib.evaluate_checkpoint(config, str(workdir))
  assert evaluated['epoch'] == full['best_epoch']
  assert evaluated['test'] == pytest.approx(full['test'])


def test_an_interrupt_request_stops_at_the_epoch_boundary_and_resumes_exactly(tmp_path,
                                                                              make_config):
  config = make_config(train={'num_epochs': 5, 'eval_every': 2, 'patience': 5})
  full = run_lib.train_and_evaluate(config, str(tmp_path / 'full'))

  def ctrl_c_during_epoch_3(epoch, metrics):
    if epoch == 3:
      interrupt.request()

  try:
    with pytest.raises(Interrupted, match='interrupted at epoch 3; run the same command'):
      run_lib.train_and_evaluate(config, str(tmp_path / 'run'),
                                 epoch_callback=ctrl_c_during_epoch_3)
  finally:
    interrupt.clear()
  assert checkpoint.Checkpoints(str(tmp_path / 'run')).epochs(checkpoint.LATEST)[0] == 3
  resumed = run_lib.train_and_evaluate(config, str(tmp_path / 'run'))
  for key in ('best_epoch', 'val', 'test', 'history'):
    assert resumed[key] == full[key], key
  assert _log(tmp_path / 'run') == _log(tmp_path / 'full')


def test_a_run_folder_in_use_is_refused(tmp_path, make_config):
  with runfolder.lock(str(tmp_path)):
    with pytest.raises(RunFolderError, match='in use by another process'):
      run_lib.train_and_evaluate(make_config(train={'num_epochs': 1}), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == [runfolder.LOCK_FILE]


def test_a_finished_run_continues_to_more_epochs_exactly(tmp_path, make_config):
  longer = make_config(train={'num_epochs': 6, 'eval_every': 2, 'patience': 5})
  full = run_lib.train_and_evaluate(longer, str(tmp_path / 'full'))
  run_lib.train_and_evaluate(make_config(train={'num_epochs': 4, 'eval_every': 2, 'patience': 5}),
                             str(tmp_path / 'run'))
  continued = run_lib.train_and_evaluate(longer, str(tmp_path / 'run'))
  for key in ('best_epoch', 'epochs_run', 'val', 'test', 'history'):
    assert continued[key] == full[key], key
  with pytest.raises(ConfigError, match='has trained 6 epochs, more than '
                     'config.train.num_epochs=3'):
    run_lib.train_and_evaluate(make_config(train={'num_epochs': 3, 'eval_every': 2, 'patience': 5}),
                               str(tmp_path / 'run'))
  assert runfolder.saved_config(str(tmp_path / 'run'))['train']['num_epochs'] == 6


def test_given_setting_trains_on_the_declared_mask(tmp_path, make_config):
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
  config = make_config(train={'num_epochs': 2})
  config.data.update(format='interactions', path=str(tmp_path), setting='given',
                     modalities=('image', 'audio', 'text'))
  dataset = data_lib.load_dataset(config)
  np.testing.assert_array_equal(dataset.availability, declared)
  results = run_lib.train_and_evaluate(config, str(tmp_path / 'run'))
  groups = np.unique((~declared).sum(axis=1)[dataset.test_pairs[:, 1]])
  assert set(results['test_by_group']) == {evaluate.group_name(int(g)) for g in groups}
  assert set(results['test_by_group']) == {'full', 'missing_1', 'missing_2'}
  assert results['missing'] == dataset.missing_report()


def _messages(caplog):
  return [r.getMessage() for r in caplog.records if r.name.startswith('milk_jax')]


def test_a_run_logs_its_time_left_its_early_stop_and_where_its_results_went(tmp_path, caplog,
                                                                            make_config):
  # A step this small leaves the parameters as they are in float32: no evaluation beats
  # epoch 0's, so patience 2 ends the run after epoch 2 of 6.
  config = make_config(train={'num_epochs': 6, 'eval_every': 1, 'patience': 2,
                              'learning_rate': 1e-12})
  caplog.set_level(logging.INFO, logger='milk_jax')
  results = run_lib.train_and_evaluate(config, str(tmp_path))
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


def test_a_failed_drawing_of_the_curves_is_a_warning(tmp_path, monkeypatch, caplog, make_config):
  def broken(*args, **kwargs):
    raise RuntimeError('no fonts')
  monkeypatch.setattr(plots, 'training_curves', broken)
  run_lib._write_curves(str(tmp_path), make_config(), [], 0)  # pylint: disable=protected-access
  assert 'could not draw' in caplog.text and 'RuntimeError: no fonts' in caplog.text
  assert not (tmp_path / 'curves.png').exists()
