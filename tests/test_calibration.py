"""Score calibration per missing-modality pattern: the fit, its shrinkage, and a run that uses it."""

import copy
import json
import os
import shutil
import types

import numpy as np
import pytest

from milk_jax import run as run_lib
import milk_jax
from milk_jax import calibration
from milk_jax import evaluate
from milk_jax import recommend
from milk_jax.data import dataset as dataset_lib
from milk_jax.errors import RunFolderError

NAMES = ('image', 'text')


def test_affine_match_hand_computed():
  # Pattern scores mean 1, std 2; complete items' mean 3, std 1: a = 1/2, b = 3 - 1/2 = 2.5.
  assert calibration.affine_match(1.0, 2.0, 3.0, 1.0, 10, 0.0) == pytest.approx((0.5, 2.5))
  # n0 = n: weight 1/2, halfway to the identity: (1 - 1/2 + 1/4, 2.5 / 2).
  assert calibration.affine_match(1.0, 2.0, 3.0, 1.0, 10, 10.0) == pytest.approx((0.75, 1.25))


def test_shrinkage_limits():
  full = calibration.affine_match(-2.0, 0.5, 1.0, 3.0, 7, 0.0)
  assert full == pytest.approx((6.0, 13.0))  # n0 = 0: the full match, a = 3/0.5, b = 1 + 12.
  scale, offset = calibration.affine_match(-2.0, 0.5, 1.0, 3.0, 7, 1e12)
  assert scale == pytest.approx(1.0, abs=1e-9) and offset == pytest.approx(0.0, abs=1e-9)
  # No spread to match: the scores stay.
  assert calibration.affine_match(1.0, 0.0, 3.0, 1.0, 10, 0.0) == (1.0, 0.0)


def _fit_example(shrinkage):
  # d = 1 and two users of vector 1: a user's scores are the items' values.
  # Complete items 0, 1: values 0, 2 (mean 1, std 1); text-only items 2, 3: 10, 14 (mean 12,
  # std 2); image-only item 4 is not a validation candidate.
  users = np.ones((2, 1))
  items = np.array([[0.0], [2.0], [10.0], [14.0], [5.0]])
  availability = np.array([[1, 1], [1, 1], [0, 1], [0, 1], [1, 0]], bool)
  return calibration.fit(users, items, availability, np.array([0, 1]), np.arange(4), NAMES,
                         shrinkage)


def test_fit_hand_computed():
  fitted = _fit_example(0.0)
  assert (fitted.reference_mean, fitted.reference_std) == pytest.approx((1.0, 1.0))
  by_pattern = {p.available: p for p in fitted.maps}
  complete, text = by_pattern[(True, True)], by_pattern[(False, True)]
  assert (complete.scale, complete.offset) == (1.0, 0.0)
  assert (text.num_items, text.mean, text.std) == (2, pytest.approx(12.0), pytest.approx(2.0))
  assert (text.scale, text.offset) == pytest.approx((0.5, -5.0))  # 10 -> 0, 14 -> 2.
  scale, offset = fitted.item_maps(np.array([[1, 1], [0, 1], [0, 1], [1, 0]], bool))
  np.testing.assert_allclose(scale * np.array([0.0, 10.0, 14.0, 5.0]) + offset, [0, 0, 2, 5])
  report = fitted.report()
  assert [p['pattern'] for p in report['patterns']] == ['image+text', 'text']
  # n0 = 2 = n: weight 1/2.
  text = {p.available: p for p in _fit_example(2.0).maps}[(False, True)]
  assert (text.scale, text.offset) == pytest.approx((0.75, -2.5))


def test_the_map_keeps_each_users_order_within_a_pattern():
  rng = np.random.default_rng(0)
  users, items = rng.normal(size=(30, 4)), rng.normal(size=(60, 4))
  items[:20] *= 3.0  # Patterns on different scales.
  availability = np.ones((60, 3), bool)
  availability[:20, 0] = False
  availability[20:35, 1:] = False
  fitted = calibration.fit(users, items, availability, np.arange(30), np.arange(60),
                           ('a', 'b', 'c'), 5.0)
  scale, offset = fitted.item_maps(availability)
  assert (scale > 0).all() and not np.allclose(scale, 1.0)
  scores = users @ items.T
  calibrated = scores * scale + offset
  for pattern in {tuple(r) for r in availability}:
    cols = (availability == np.asarray(pattern)).all(axis=1)
    np.testing.assert_array_equal(np.argsort(scores[:, cols], axis=1),
                                  np.argsort(calibrated[:, cols], axis=1))


def test_unseen_pattern_and_missing_reference_keep_their_scores():
  fitted = _fit_example(0.0)
  scale, offset = fitted.item_maps(np.array([[1, 0]], bool))  # Image-only: not on validation.
  assert (scale[0], offset[0]) == (1.0, 0.0)
  # No complete item among the candidates: nothing to match, every pattern stays.
  users, items = np.ones((2, 1)), np.array([[1.0], [3.0], [7.0]])
  fitted = calibration.fit(users, items, np.array([[0, 1], [0, 1], [1, 0]], bool),
                           np.arange(2), np.arange(3), NAMES, 0.0)
  assert fitted.reference_mean is None
  assert all((p.scale, p.offset) == (1.0, 0.0) for p in fitted.maps)


def test_none_is_the_uncalibrated_evaluation(make_config):
  rng = np.random.default_rng(2)
  dataset = types.SimpleNamespace(
      val_items=np.arange(10, 25), test_items=np.arange(25, 40),
      val_pairs=np.stack([rng.integers(0, 20, 60), rng.integers(10, 25, 60)], axis=1),
      test_pairs=np.stack([rng.integers(0, 20, 60), rng.integers(25, 40, 60)], axis=1),
      num_missing=rng.integers(0, 2, 40), modality_names=NAMES)
  dataset.availability = np.stack([np.ones(40, bool), dataset.num_missing == 0], axis=1)
  users, items = rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(40, 4)).astype(
      np.float32)
  eval_config = make_config().eval
  assert calibration.fit_validation(eval_config, users, items, dataset, 0) is None
  held_out = evaluate.held_out_metrics(eval_config, users, items, dataset)
  assert set(held_out) == {'test', 'test_by_group', 'test_within_group'}
  candidates = np.arange(10, 40)
  assert held_out['test'] == evaluate.rank_metrics(users, items, dataset.test_pairs, candidates,
                                                   eval_config.ks, eval_config.user_batch_size)
  eval_config.calibration = 'validation'
  fitted = calibration.fit_validation(eval_config, users, items, dataset, 3)
  maps = fitted.item_maps(dataset.availability)
  both = evaluate.held_out_metrics(eval_config, users, items, dataset, maps)
  assert both['test_uncalibrated'] == held_out['test']
  assert both['test_within_group_uncalibrated'] == held_out['test_within_group']
  assert both['test'] == evaluate.rank_metrics(users, items, dataset.test_pairs, candidates,
                                               eval_config.ks, eval_config.user_batch_size, maps)


def test_a_damaged_calibration_file_is_refused(tmp_path):
  fitted = calibration.fit(np.ones((2, 1)), np.array([[0.0], [2.0], [10.0], [14.0]]),
                           np.array([[1, 1], [1, 1], [0, 1], [0, 1]], bool), np.arange(2),
                           np.arange(4), NAMES, 0.0)
  calibration.write(str(tmp_path), fitted)
  with pytest.raises(RunFolderError, match="'epoch' is None"):
    calibration.read(str(tmp_path), NAMES)
  path = tmp_path / calibration.CALIBRATION_FILE
  report = fitted.report()
  report['epoch'] = 4
  report['patterns'][1]['scale'] = -1.0
  path.write_text(json.dumps(report))
  with pytest.raises(RunFolderError, match=r'patterns\[1\]\.scale is -1\.0, must be positive'):
    calibration.read(str(tmp_path), NAMES)
  with pytest.raises(RunFolderError, match=r"calibration\.json is missing"):
    calibration.read(str(tmp_path / 'elsewhere'), NAMES)


@pytest.fixture(scope='module')
def calibrated_run(tmp_path_factory, make_config):
  config = make_config(train={'num_epochs': 4})
  config.eval.calibration = 'validation'
  config.eval.calibration_shrinkage = 5.0
  folder = str(tmp_path_factory.mktemp('calibrated') / 'run')
  results = run_lib.train_and_evaluate(config, folder)
  return folder, config, results


@pytest.mark.slow  # Trains a tiny run (about 15 s).
def test_a_run_reports_saves_and_serves_its_calibration(calibrated_run, tmp_path,
                                                        write_items_folder):
  folder, config, results = calibrated_run
  report = results['calibration']
  assert report['epoch'] == results['best_epoch'] and report['shrinkage'] == 5.0
  patterns = {p['pattern']: p for p in report['patterns']}
  assert set(patterns) == {'image+text', 'image', 'text'}  # FTMT: new items miss one.
  assert (patterns['image+text']['scale'], patterns['image+text']['offset']) == (1.0, 0.0)
  assert patterns['text']['scale'] != 1.0
  for key in ('test', 'test_by_group', 'test_within_group'):
    assert set(results[f'{key}_uncalibrated']) == set(results[key])
  # The best epoch's validation, ranked by the maps fitted on it (they read no label).
  dataset = dataset_lib.load_dataset(config)
  run_vectors = np.load(os.path.join(folder, 'vectors.npz'))
  assert results['val_calibrated'] == evaluate.evaluate_split(
      config.eval, run_vectors['users'], run_vectors['items'], dataset, 'val',
      item_maps=calibration.read(folder, dataset.modality_names).item_maps(dataset.availability))
  with open(os.path.join(folder, 'results.json')) as f:
    assert json.load(f)['calibration'] == report
  with open(os.path.join(folder, calibration.CALIBRATION_FILE)) as f:
    assert json.load(f) == report

  # A text-only new item moves by the text pattern's map; a complete one keeps its score.
  items = [int(i) for i in dataset.test_items[:2]]
  ids = [str(dataset.item_ids[i]) for i in items]
  new = write_items_folder(str(tmp_path / 'new'), config, dataset, items,
                           np.array([[False, True], [True, True]]))
  run = milk_jax.load(folder)
  scores = run.user_vectors[:3] @ run.embed(run.load_items(new)).T
  text = patterns['text']
  scale, offset = run.score_maps(np.array([[False, True], [True, True]]))
  np.testing.assert_allclose(scale, [text['scale'], 1.0], rtol=1e-6)
  np.testing.assert_allclose(offset, [text['offset'], 0.0], rtol=1e-6, atol=1e-7)
  expected = np.stack([text['scale'] * scores[:, 0] + text['offset'], scores[:, 1]], axis=1)
  users = [str(u) for u in run.user_ids[:3]]
  command = copy.deepcopy(config)
  command.recommend.new_items = new
  command.recommend.k = 2
  command.recommend.output = str(tmp_path / 'top.tsv')
  for top in (run.recommend(users, k=2, items=new), recommend.recommend(command, folder)):
    for row in range(3):
      found = dict(zip(top.items[row].tolist(), top.scores[row].tolist()))
      np.testing.assert_allclose([found[ids[0]], found[ids[1]]], expected[row], rtol=1e-5,
                                 atol=1e-5)


@pytest.mark.slow  # Uses the trained run of the test above.
def test_eval_refits_the_same_maps_and_serving_refuses_maps_of_another_epoch(calibrated_run,
                                                                            tmp_path,
                                                                            write_items_folder):
  folder, config, results = calibrated_run
  copied = str(tmp_path / 'run')
  shutil.copytree(folder, copied)
  evaluated = run_lib.evaluate_checkpoint(config, copied)
  assert evaluated['calibration'] == results['calibration']
  for key in ('test', 'test_by_group', 'test_within_group', 'test_uncalibrated',
              'val_calibrated'):
    assert evaluated[key] == results[key]
  path = os.path.join(copied, calibration.CALIBRATION_FILE)
  with open(path) as f:
    saved = json.load(f)
  saved['epoch'] += 1000
  with open(path, 'w') as f:
    json.dump(saved, f)
  run = milk_jax.load(copied)
  with pytest.raises(RunFolderError, match=rf'holds the score maps of epoch {saved["epoch"]}, '
                     rf'but the run ranks with epoch {results["best_epoch"]}'):
    run.recommend(None, 3, items=_items_folder(config, tmp_path, write_items_folder))


def _items_folder(config, tmp_path, write_items_folder):
  dataset = dataset_lib.load_dataset(config)
  return write_items_folder(str(tmp_path / 'items'), config, dataset, dataset.test_items[:3])
