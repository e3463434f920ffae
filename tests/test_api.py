"""A trained run serves new items: recommend, export and milk_jax.load against the evaluation.

Each run trains a few epochs of a tiny synthetic config once per module; its
test items are then handed back as a folder of "new" items, raw (before
imputation and normalisation), with their missingness declared, exactly as
a user would bring tomorrow's items.
"""

import copy
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest

from milk_jax import checkpoint
from milk_jax import run as run_lib
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib
import milk_jax
from milk_jax import api
from milk_jax import evaluate
from milk_jax import recommend
from milk_jax import runfolder
from milk_jax import serving
from milk_jax.data import dataset as dataset_lib
from milk_jax.data.errors import DataError
from milk_jax.errors import ConfigError
from milk_jax.errors import RunFolderError

K = 7


class TrainedRun:
  """A run folder, its dataset, and the vectors its evaluation ranks with."""

  def __init__(self, folder, config, write_items_folder):
    self.folder, self.config = folder, config
    self.results = run_lib.train_and_evaluate(config, folder)
    self.dataset = dataset_lib.load_dataset(config)
    extras = run_lib.cf_vectors(config, folder, self.dataset, train_if_missing=False)
    program = step_lib.EpochProgram(config, self.dataset,
                                    state_lib.make_method(config, self.dataset), extras)
    _, params = checkpoint.restore_best_params(folder, program.fresh_state())
    self.users, self.items = (np.asarray(v) for v in program.vectors(params))
    self.new_folder = write_items_folder(os.path.join(folder, '..', 'new_items'), config,
                                         self.dataset, self.dataset.test_items)

  def recommend_config(self, **settings):
    """The run's config set to recommend its top K new items, with `settings` in
    config.recommend."""
    config = copy.deepcopy(self.config)
    config.recommend.new_items = self.new_folder
    config.recommend.k = K
    for key, value in settings.items():
      config.recommend[key] = value
    return config

  def evaluation_top(self, k):
    """Each user's top-k test items by the evaluation's vectors, as raw ids."""
    test = self.dataset.test_items
    scores = self.users @ self.items[test].T
    order = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    return self.dataset.item_ids[test][order]


@pytest.fixture(scope='module')
def milk_run(tmp_path_factory, make_config, write_items_folder):
  config = make_config(train={'num_epochs': 4})
  config.data.setting = 'mtmt'  # Warm items miss modalities too: the fills matter.
  return TrainedRun(str(tmp_path_factory.mktemp('milk') / 'run'), config, write_items_folder)


@pytest.fixture(scope='module')
def heater_run(tmp_path_factory, make_config, write_items_folder):
  config = make_config('heater', train={'num_epochs': 4})
  config.backbone.num_epochs = 3
  return TrainedRun(str(tmp_path_factory.mktemp('heater') / 'run'), config, write_items_folder)


def _read_tsv(path):
  with open(path) as f:
    lines = f.read().splitlines()
  assert lines[0] == 'user\trank\titem\tscore'
  top = {}
  for line in lines[1:]:
    user, rank, item, _ = line.split('\t')
    top.setdefault(user, []).append(item)
    assert len(top[user]) == int(rank)
  return top


@pytest.mark.parametrize('run_name',
                         ['milk_run', pytest.param('heater_run', marks=pytest.mark.slow)])
def test_recommend_equals_the_evaluation_ranking(run_name, request, tmp_path):
  run = request.getfixturevalue(run_name)
  output = str(tmp_path / 'top.tsv')
  recommend.recommend(run.recommend_config(output=output), run.folder)
  top = _read_tsv(output)
  expected = run.evaluation_top(K)
  test_users = np.unique(run.dataset.test_pairs[:, 0])
  assert len(top) == run.dataset.num_users
  for user in test_users:
    assert top[run.dataset.user_ids[user]] == expected[user].tolist()


def test_load_recommend_equals_the_command_line(milk_run, tmp_path):
  output = str(tmp_path / 'top.tsv')
  recommend.recommend(milk_run.recommend_config(output=output), milk_run.folder)
  from_file = _read_tsv(output)
  users = ['3', '0', '17']
  top = milk_jax.load(milk_run.folder).recommend(users, K, items=milk_run.new_folder)
  assert top.users.tolist() == users
  for user, items in zip(top.users, top.items):
    assert items.tolist() == from_file[user]
  assert np.all(np.diff(top.scores, axis=1) <= 0)


def test_export_reproduces_the_evaluation_scores(milk_run, tmp_path):
  config = copy.deepcopy(milk_run.config)
  config.export.output = str(tmp_path / 'export')
  files = recommend.export(config, milk_run.folder)
  users, items = np.load(files['users.npy']), np.load(files['items.npy'])
  with open(files['item_ids.txt']) as f:
    item_ids = f.read().split()
  assert item_ids == milk_run.dataset.item_ids.tolist()
  np.testing.assert_array_equal(users @ items.T, milk_run.users @ milk_run.items.T)
  metrics = evaluate.evaluate_split(config.eval, users, items, milk_run.dataset, 'test')
  assert metrics == milk_run.results['test']


def test_export_appends_the_new_items_of_a_folder(milk_run, tmp_path):
  config = copy.deepcopy(milk_run.config)
  config.export.output = str(tmp_path / 'export')
  config.export.new_items = milk_run.new_folder
  # The test items' ids are catalogue ids, but not warm ones: they may come back as new.
  files = recommend.export(config, milk_run.folder)
  items = np.load(files['items.npy'])
  test = milk_run.dataset.test_items
  np.testing.assert_allclose(items[milk_run.dataset.num_items:], milk_run.items[test],
                             rtol=0, atol=1e-6)


def test_a_new_item_is_imputed_with_the_training_statistics(milk_run):
  """A missing modality is filled with the warm items' mean, not the new items' own."""
  run = milk_jax.load(milk_run.folder)
  dataset, config = milk_run.dataset, milk_run.config
  raw, _ = dataset_lib.read_layout(config.data, int(config.seed))
  rng = np.random.default_rng(0)
  image = rng.normal(size=(5, raw.features[0].shape[1])).astype(np.float32) + 3.0
  text = rng.normal(size=(5, raw.features[1].shape[1])).astype(np.float32) + 3.0
  availability = np.ones((5, 2), bool)
  availability[:3, 1] = False  # Three items lack text; their text rows must be ignored.
  vectors = run.item_vectors({'image': image, 'text': text}, availability)
  warm = dataset.warm_items
  present = dataset.availability[warm, 1]
  warm_mean = raw.features[1][warm[present]].astype(np.float64).mean(axis=0)
  filled = text.copy()
  filled[:3] = warm_mean  # By hand: what training did to warm items without text.
  expected = run.item_vectors({'image': image, 'text': filled})
  np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-6)
  own_mean = text[3:].mean(axis=0)  # A fill refitted on the new items would give this.
  refitted = text.copy()
  refitted[:3] = own_mean
  assert not np.allclose(vectors[:3], run.item_vectors({'image': image, 'text': refitted})[:3])


def test_include_warm_ranks_warm_items_minus_training_items(milk_run):
  run = milk_jax.load(milk_run.folder)
  dataset = milk_run.dataset
  top = run.recommend(None, 5, items=None, include_warm=True, item_chunk=16, user_chunk=8)
  warm = dataset.warm_items
  scores = milk_run.users @ milk_run.items[warm].T
  scores[dataset.train_pairs[:, 0], np.searchsorted(warm, dataset.train_pairs[:, 1])] = -np.inf
  order = np.argsort(-scores, axis=1, kind='stable')[:, :5]
  np.testing.assert_array_equal(top.items, dataset.item_ids[warm][order])


# ----------------------------------------------------------------- bad input


def _assert_nothing_written(folder, before):
  assert sorted(os.listdir(folder)) == before


def _bad_folder(milk_run, tmp_path, change):
  folder = str(tmp_path / 'bad')
  shutil.copytree(milk_run.new_folder, folder)
  change(folder)
  return folder


def _refused(milk_run, folder, message, error=DataError):
  config = milk_run.recommend_config(new_items=folder)
  before = sorted(os.listdir(milk_run.folder))
  with pytest.raises(error, match=message):
    recommend.recommend(config, milk_run.folder)
  _assert_nothing_written(milk_run.folder, before)


def test_wrong_feature_width_is_refused(milk_run, tmp_path):
  def change(folder):
    np.save(os.path.join(folder, 'text_feat.npy'), np.ones((50, 5), np.float32))
  _refused(milk_run, _bad_folder(milk_run, tmp_path, change), r"text_feat\.npy: shape .* 'text'")


def test_unknown_modality_is_refused(milk_run, tmp_path):
  def change(folder):
    np.save(os.path.join(folder, 'audio_feat.npy'), np.ones((50, 5), np.float32))
  _refused(milk_run, _bad_folder(milk_run, tmp_path, change),
           r"audio_feat\.npy: modality 'audio' is not one of the run's")


def test_a_new_item_without_any_modality_is_refused(milk_run, tmp_path):
  def change(folder):
    available = np.load(os.path.join(folder, 'availability.npy'))
    available[4] = False
    np.save(os.path.join(folder, 'availability.npy'), available)
  _refused(milk_run, _bad_folder(milk_run, tmp_path, change),
           r'availability\.npy.*1 items have no modality at all \(first: 4\)')


def test_an_id_of_a_warm_item_is_refused(milk_run, tmp_path):
  warm_id = milk_run.dataset.item_ids[milk_run.dataset.warm_items[0]]
  def change(folder):
    path = os.path.join(folder, 'item_ids.txt')
    with open(path) as f:
      lines = f.read().splitlines()
    lines[2] = warm_id
    with open(path, 'w') as f:
      f.write('\n'.join(lines) + '\n')
  _refused(milk_run, _bad_folder(milk_run, tmp_path, change),
           rf"1 new items have the id of an item the run trained on \(first: '{warm_id}', row 2\)")


def test_nan_features_are_refused(milk_run, tmp_path):
  def change(folder):
    path = os.path.join(folder, 'image_feat.npy')
    features = np.load(path)
    features[7, 0] = np.nan
    np.save(path, features)
  _refused(milk_run, _bad_folder(milk_run, tmp_path, change),
           r'image_feat\.npy: contains NaN/inf in 1 rows \(first: 7\)')


def test_a_run_without_checkpoints_is_refused(milk_run, tmp_path):
  folder = str(tmp_path / 'run')
  shutil.copytree(milk_run.folder, folder, ignore=shutil.ignore_patterns('checkpoints'))
  with pytest.raises(RunFolderError, match='no checkpoints under'):
    api.load(folder)


def test_a_run_without_serving_files_is_refused(milk_run, tmp_path):
  folder = str(tmp_path / 'run')
  shutil.copytree(milk_run.folder, folder)
  os.remove(os.path.join(folder, 'serving.npz'))
  with pytest.raises(RunFolderError, match=r'serving\.npz is missing.*--mode=eval'):
    api.load(folder)


def test_eval_writes_the_serving_files_of_an_older_run(milk_run, tmp_path):
  """A run trained before serving files existed gets them from one --mode=eval."""
  folder = str(tmp_path / 'run')
  shutil.copytree(milk_run.folder, folder)
  for name in ('serving.npz', 'vectors.npz'):
    os.remove(os.path.join(folder, name))
  run_lib.evaluate_checkpoint(milk_run.config, folder)
  run = api.load(folder)
  np.testing.assert_array_equal(run.catalogue_vectors, milk_run.items)


def test_a_conflicting_config_is_refused(milk_run):
  config = milk_run.recommend_config()
  config.seed = 1
  with pytest.raises(ConfigError, match=r'config\.json holds a run with a different config '
                     r'\(fields: seed\)'):
    recommend.recommend(config, milk_run.folder)


def test_unknown_users_are_refused(milk_run, tmp_path):
  users = tmp_path / 'users.txt'
  users.write_text('3\nnobody\n')
  config = milk_run.recommend_config(users=str(users))
  with pytest.raises(DataError, match=r"users\.txt: 1 user ids are not users of the run "
                     r"\(first: 'nobody', entry 2\)"):
    recommend.recommend(config, milk_run.folder)


def test_a_backbone_has_no_new_item_vectors(milk_run, tmp_path, make_config):
  """BPR-MF cannot embed an item it did not train on: said plainly."""
  config = make_config('bprmf', train={'num_epochs': 2})
  folder = str(tmp_path / 'bprmf')
  run_lib.train_and_evaluate(config, folder)
  with pytest.raises(ConfigError, match=r"config.method='bprmf' cannot embed items that arrive "
                     r'after training \(a warm backbone'):
    milk_jax.load(folder).recommend(None, 3, items=milk_run.new_folder)


# ------------------------------------------------------- read only, one epoch, hostile files


def _copy_run(milk_run, tmp_path):
  folder = str(tmp_path / 'run')
  shutil.copytree(milk_run.folder, folder)
  return folder


def test_serving_reads_the_run_folder_without_writing_to_it(milk_run, tmp_path, snapshot):
  """No lock file, no orbax clean-up of a save in flight, nothing created or repaired."""
  folder = _copy_run(milk_run, tmp_path)
  if os.path.exists(os.path.join(folder, runfolder.LOCK_FILE)):
    os.remove(os.path.join(folder, runfolder.LOCK_FILE))
  for which in ('best', 'latest'):  # What a trainer saving at this moment has on disk.
    os.makedirs(os.path.join(folder, 'checkpoints', which, '99.orbax-checkpoint-tmp-1', 'arrays'))
  before = snapshot(folder)
  assert milk_jax.load(folder).params is not None
  recommend.recommend(milk_run.recommend_config(output=str(tmp_path / 'top.tsv')), folder)
  config = copy.deepcopy(milk_run.config)
  config.export.output = str(tmp_path / 'export')
  config.export.new_items = milk_run.new_folder
  recommend.export(config, folder)
  assert snapshot(folder) == before


def test_vectors_of_another_epoch_rank_with_the_best_checkpoint_alone(milk_run, tmp_path, caplog):
  """As after a kill while a run was extended: vectors.npz (scrambled here) is of an older
  epoch than checkpoints/best; users and new items both come from the best checkpoint."""
  folder = _copy_run(milk_run, tmp_path)
  best = milk_run.results['best_epoch']
  users = np.random.default_rng(0).normal(size=milk_run.users.shape)
  serving.write_vectors(folder, users, milk_run.items, best + 1000)
  output = str(tmp_path / 'top.tsv')
  with caplog.at_level(logging.INFO, logger='milk_jax'):
    recommend.recommend(milk_run.recommend_config(output=output), folder)
  assert f'vectors.npz holds epoch {best + 1000}, but ' in caplog.text
  assert f'ranking with epoch {best}' in caplog.text
  top, expected = _read_tsv(output), milk_run.evaluation_top(K)
  for user in np.unique(milk_run.dataset.test_pairs[:, 0]):
    assert top[milk_run.dataset.user_ids[user]] == expected[user].tolist()
  # The warm items' vectors of the best epoch are not saved: refused, not mixed.
  with pytest.raises(RunFolderError, match=r"only vectors\.npz holds the warm items' vectors"):
    recommend.recommend(milk_run.recommend_config(include_warm=True), folder)
  config = copy.deepcopy(milk_run.config)
  config.export.output = str(tmp_path / 'export')
  with pytest.raises(RunFolderError, match=rf'holds epoch {best + 1000}, but .*best holds epoch'):
    recommend.export(config, folder)
  assert not os.path.exists(tmp_path / 'export')


def test_the_ranking_rate_leaves_compilation_out(milk_run, caplog):
  run = milk_jax.load(milk_run.folder)
  with caplog.at_level(logging.INFO, logger='milk_jax'):
    run.recommend(None, K, items=milk_run.new_folder, item_chunk=4)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('ranked ')]
  assert len(lines) > 1
  assert 'of it compiling' in lines[0] and 'items/s' not in lines[0]
  assert all('items/s' in line for line in lines[1:])


def test_zero_new_items_are_refused(milk_run, tmp_path):
  def change(folder):
    for name in ('image', 'text'):
      path = os.path.join(folder, f'{name}_feat.npy')
      np.save(path, np.load(path)[:0])
    np.save(os.path.join(folder, 'availability.npy'), np.zeros((0, 2), bool))
    open(os.path.join(folder, 'item_ids.txt'), 'w').close()
  _refused(milk_run, _bad_folder(milk_run, tmp_path, change),
           r'image_feat\.npy: 0 rows: there are no new items')
  run = milk_jax.load(milk_run.folder)
  with pytest.raises(DataError, match='features: 0 rows: there are no new items'):
    run.item_vectors({'image': np.zeros((0, run.feature_dims[0]), np.float32)})


def test_an_availability_file_of_the_other_format_is_refused(milk_run, tmp_path):
  def change(folder):
    os.remove(os.path.join(folder, 'availability.npy'))
    with open(os.path.join(folder, 'availability.tsv'), 'w') as f:
      f.write('item\timage\ttext\n')
  _refused(milk_run, _bad_folder(milk_run, tmp_path, change),
           r'availability\.tsv: the run reads the availability from availability\.npy')


@pytest.mark.parametrize('name, make, kind', [
    ('text_feat.npy', os.mkfifo, 'a FIFO'),
    ('item_ids.txt', os.mkfifo, 'a FIFO'),
    ('availability.npy', lambda path: os.symlink('/dev/zero', path), 'a character device'),
])
def test_a_special_file_is_refused_not_read(milk_run, tmp_path, name, make, kind,
                                            fails_instead_of_hanging):
  def change(folder):
    os.remove(os.path.join(folder, name))
    make(os.path.join(folder, name))
  folder = _bad_folder(milk_run, tmp_path, change)
  with fails_instead_of_hanging():
    _refused(milk_run, folder, rf'{re.escape(name)}: {kind}.*, not a regular file')


@pytest.mark.parametrize('field, value', [('item_ids_file', '/etc/hostname'),
                                          ('availability_file', '../availability.npy')])
def test_config_file_names_that_leave_the_folder_are_refused(milk_run, tmp_path, field, value):
  folder = _copy_run(milk_run, tmp_path)
  path = os.path.join(folder, runfolder.CONFIG_FILE)
  saved = json.loads(open(path).read())
  saved['data'][field] = value
  runfolder.write_json(path, saved)
  with pytest.raises(DataError, match=re.escape(f'config.json: data.{field}={value!r} must be a '
                                                'file name inside the data folder')):
    milk_jax.load(folder)


def test_a_form_feed_or_line_separator_inside_an_id_stays_in_it(milk_run, tmp_path):
  def change(folder):
    path = os.path.join(folder, 'item_ids.txt')
    lines = open(path).read().split('\n')
    lines[0], lines[1] = 'a\x0cb', 'c\u2028d'
    with open(path, 'w', newline='') as f:
      f.write('\n'.join(lines[:-1]).replace('\n', '\r\n') + '\r\n')  # Windows line ends, too.
  items = milk_jax.load(milk_run.folder).load_items(_bad_folder(milk_run, tmp_path, change))
  assert items.ids[:2].tolist() == ['a\x0cb', 'c\u2028d']
  folder = _copy_run(milk_run, tmp_path)
  users = os.path.join(folder, 'users.tsv')
  text = open(users, newline='').read().replace('\t3\n', '\tx\u2028y\n', 1)
  with open(users, 'w', newline='') as f:
    f.write(text)
  assert milk_jax.load(folder).user_ids[3] == 'x\u2028y'


@pytest.mark.parametrize('name, key', [('vectors.npz', 'users'), ('serving.npz', 'fill_1')])
def test_nan_in_a_serving_file_is_refused(milk_run, tmp_path, name, key):
  folder = _copy_run(milk_run, tmp_path)
  path = os.path.join(folder, name)
  with np.load(path) as saved:
    arrays = dict(saved)
  arrays[key] = arrays[key].copy()
  arrays[key].reshape(-1)[0] = np.nan
  np.savez(path, **arrays)
  with pytest.raises(RunFolderError, match=rf"{re.escape(name)}: '{key}' holds NaN or inf"):
    milk_jax.load(folder)


def test_a_non_utf8_id_map_is_refused(milk_run, tmp_path):
  folder = _copy_run(milk_run, tmp_path)
  with open(os.path.join(folder, 'users.tsv'), 'wb') as f:
    f.write(b'index\tid\n0\t\xff\xfe\n')
  with pytest.raises(RunFolderError, match=r'users\.tsv: not UTF-8 text'):
    milk_jax.load(folder)


@pytest.mark.slow
def test_extras_that_do_not_fit_the_method_are_refused(heater_run, tmp_path):
  folder = str(tmp_path / 'run')
  shutil.copytree(heater_run.folder, folder)
  path = os.path.join(folder, 'serving.npz')
  with np.load(path) as saved:
    arrays = dict(saved)
  arrays['extra__cf_users_std'] = arrays['extra__cf_users_std'][:, :3]
  np.savez(path, **arrays)
  with pytest.raises(RunFolderError, match=r"serving\.npz: the saved extras .* do not fit "
                     r"config\.method='heater'"):
    milk_jax.load(folder).recommend(None, K, items=heater_run.new_folder)
