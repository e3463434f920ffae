"""Scripts that feed studies: scripts/make_authors_layout.py round-trips through the milk layout."""

import copy
import csv
import importlib.util
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from configs import authors
from configs import ml100k
from milk_jax import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ML100K = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'ml100k-mm')


@pytest.mark.skipif(not os.path.isdir(ML100K), reason='../shared/data/ml100k-mm is absent')
@pytest.mark.parametrize('setting', ['ftmt', 'mtmt'])
def test_authors_layout_gives_back_the_split_and_masks(tmp_path, setting):
  out = tmp_path / 'authors'
  done = subprocess.run([sys.executable, 'scripts/make_authors_layout.py',
                         '--config=configs/ml100k.py', f'--out={out}', '--seed=1'],
                        cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  source = ml100k.get_config()
  source.seed, source.data.setting = 1, setting
  expected = data.load_dataset(source)
  config = authors.get_config()
  config.seed, config.data.setting, config.data.path = 1, setting, str(out)
  loaded = data.load_dataset(config)  # The mask comes from the _missing_test/_all files.
  for field in ('warm_items', 'val_items', 'test_items', 'train_pairs', 'availability'):
    np.testing.assert_array_equal(getattr(loaded, field), getattr(expected, field), field)
  # The mask really comes from the files: ignoring them at missing rates of 0 gives no gaps.
  assert not loaded.availability.all()
  no_files = copy.deepcopy(config)
  no_files.data.authors_missing_files = False
  no_files.data.test_missing_rate = no_files.data.train_missing_rate = 0.0
  assert data.load_dataset(no_files).availability.all()


def test_choose_hparams_picks_each_field_s_best_validation_value(tmp_path):
  rows = [('heater', 0.20), ('heater.alpha=0.01', 0.25), ('heater.dropout=0.3', 0.15),
          ('duif', 0.30), ('duif.reg_weight=0.01', 0.29)]
  lines = ['setting,variant,metric,n,mean,std']
  lines += [f'ftmt,{variant},val.ndcg@20,3,{mean},0.01' for variant, mean in rows]
  lines += ['ftmt,heater.dropout=0.3,val.recall@20,3,0.99,0.01']  # Another metric: ignored.
  summary = tmp_path / 'summary.csv'
  summary.write_text('\n'.join(lines) + '\n')
  done = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'choose_hparams.py'),
                         str(summary)], capture_output=True, text=True, check=True)
  chosen = [line for line in done.stdout.splitlines() if not line.startswith('#')]
  # Heater's alpha beats its default; its dropout does not; DUIF keeps its defaults.
  assert chosen == ['config.methods.heater.alpha = 0.01  # 0.2500']
  missing = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'choose_hparams.py'),
                            str(tmp_path / 'absent.csv')], capture_output=True, text=True)
  assert missing.returncode == 1 and 'absent.csv not found' in missing.stderr


def test_tune_grid_tries_each_searched_value_once():
  from configs.experiments import tune
  config = tune.get_config('ml100k,duif,heater')
  names = [name for name, _ in config.experiment.variants]
  assert names == ['duif', 'duif.reg_weight=0.0', 'duif.reg_weight=0.001', 'duif.reg_weight=0.01',
                   'heater', 'heater.alpha=0.01', 'heater.dropout=0.3']
  assert dict(config.experiment.variants)['heater.alpha=0.01'] == {
      'method': 'heater', 'methods.heater.alpha': 0.01}
  assert config.experiment.metrics == ('val.ndcg@20', 'val.recall@20')


@pytest.mark.slow  # Six experiment processes, two at a time.
def test_comparison_parallel_writes_the_single_process_table(tmp_path):
  tiny = ['--config.experiment.num_seeds=1', '--config.train.num_epochs=1',
          '--config.train.eval_every=1', '--config.backbone.num_epochs=2',
          '--config.data.synthetic.num_users=120', '--config.data.synthetic.num_items=100']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHON': sys.executable, 'JOBS': '2',
         'SETTINGS': 'ftmt', 'METHODS': 'duif gar'}
  done = subprocess.run(['bash', 'scripts/comparison_parallel.sh', 'default', str(tmp_path)] + tiny,
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  # GAR, the only backbone reader listed, ran first and alone; the others after it.
  assert 'backbones (with gar)' in done.stdout
  runs = tmp_path / 'default' / 'runs' / 'ftmt'
  assert sorted(p.name for p in runs.iterdir()) == [
      'DUIF', 'ERM', 'GAR', 'GAR_own_cadence', 'MILK', 'MILK_beta1000', '_backbone']
  table = (tmp_path / 'default' / 'table2' / 'summary.md').read_text()
  for variant in ('ERM', 'MILK', 'DUIF', 'GAR', 'GAR_own_cadence'):
    assert f'| {variant} | 1 |' in table, variant


def _script_module(name):
  """scripts/<name>.py imported as a module."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, 'scripts', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _gar_layout_module():
  return _script_module('make_gar_layout')


def test_gar_layout_shifts_items_by_one_behind_a_dummy_that_is_never_ranked(make_config):
  layout_lib = _gar_layout_module()
  dataset = data.load_dataset(make_config())
  num_users, num_items = dataset.num_users, dataset.num_items
  rng = np.random.default_rng(0)
  cf_users = rng.normal(size=(num_users, 4)).astype(np.float32)
  cf_items = rng.normal(size=(num_items, 4)).astype(np.float32)
  content = np.concatenate(dataset.features, axis=1)
  layout = layout_lib.gar_layout(dataset, content, cf_users, cf_items)
  convert = layout['convert_dict']
  # ncf.npy: users, one zero row (the dummy item 0), then our item i at the original's i + 1.
  np.testing.assert_array_equal(layout['embeddings'][:num_users], cf_users)
  np.testing.assert_array_equal(layout['embeddings'][num_users], np.zeros(4))
  np.testing.assert_array_equal(layout['embeddings'][num_users + 1:], cf_items)
  np.testing.assert_array_equal(layout['content'], content)  # The original prepends the zero row.
  np.testing.assert_array_equal(convert['warm_item'], dataset.warm_items + 1)
  np.testing.assert_array_equal(convert['cold_item'],
                                np.union1d(dataset.val_items, dataset.test_items) + 1)
  assert convert['item_array'].tolist() == list(range(num_items + 1))
  user, item = dataset.val_pairs[0]
  assert item + 1 in convert['cold_val_user_nb'][user]
  assert user in convert['cold_val_user']
  # Every user's exclusion list is the dummy, then its training items (warm, masked anyway).
  for u in (0, num_users - 1):
    trained = np.sort(dataset.train_pairs[dataset.train_pairs[:, 0] == u, 1]) + 1
    assert convert['pos_user_nb'][u].tolist() == [0] + trained.tolist()
    assert convert['emb_user_nb'][u].tolist() == trained.tolist()
  np.testing.assert_array_equal(layout['train_map'][:, 1], dataset.train_pairs[:, 1] + 1)


def test_coldrec_layout_writes_the_split_as_coldrec_reads_it(tmp_path, make_config):
  spec = importlib.util.spec_from_file_location(
      'make_coldrec_layout', os.path.join(REPO, 'scripts', 'make_coldrec_layout.py'))
  layout_lib = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(layout_lib)
  dataset = data.load_dataset(make_config())
  content = np.concatenate(dataset.features, axis=1)
  folder = tmp_path / 'tiny'
  layout_lib.write_layout(str(folder), layout_lib.coldrec_layout(dataset, content))
  np.testing.assert_array_equal(np.load(folder / 'tiny_item_content.npy'), content)

  def pairs(stem):  # As ColdRec's loader reads a file: skip the header, then user,item rows.
    lines = (folder / 'cold_item' / f'{stem}.csv').read_text().splitlines()
    assert lines[0] == 'user,item'
    return np.array([[int(v) for v in line.split(',')[:2]] for line in lines[1:]],
                    np.int64).reshape(-1, 2)

  np.testing.assert_array_equal(pairs('warm_train'), dataset.train_pairs)
  np.testing.assert_array_equal(pairs('cold_item_val'), dataset.val_pairs)
  np.testing.assert_array_equal(pairs('cold_item_test'), dataset.test_pairs)
  np.testing.assert_array_equal(pairs('overall_test'), dataset.test_pairs)
  assert pairs('warm_val').size == 0 and pairs('warm_test').size == 0
  with open(folder / 'cold_item' / 'info_dict.pkl', 'rb') as f:
    info = pickle.load(f)
  assert (info['user_num'], info['item_num']) == (dataset.num_users, dataset.num_items)
  # ColdRec's cold evaluation ranks every registered item that is not warm: all new items.
  np.testing.assert_array_equal(info['cold_item'],
                                np.union1d(dataset.val_pairs[:, 1], dataset.test_pairs[:, 1]))
  np.testing.assert_array_equal(info['warm_item'], np.unique(dataset.train_pairs[:, 1]))
  assert not np.intersect1d(info['warm_item'], info['cold_item']).size


def test_dgmrec_layout_writes_the_split_masks_and_new_items_as_the_authors_read_them(
    tmp_path, make_config):
  layout_lib = _script_module('make_dgmrec_layout')
  dataset = data.load_dataset(make_config())
  folder = tmp_path / 'tiny'
  layout_lib.write_layout(dataset, str(folder), '0.5')
  for stem in ('tiny', 'tiny_del'):  # Tab-separated, a header, then user, item, label rows.
    lines = (folder / f'{stem}.inter').read_text().splitlines()
    assert lines[0] == 'userID\titemID\tx_label'
    rows = np.array([[int(v) for v in line.split('\t')] for line in lines[1:]], np.int64)
    for label, pairs in enumerate((dataset.train_pairs, dataset.val_pairs, dataset.test_pairs)):
      np.testing.assert_array_equal(rows[rows[:, 2] == label, :2], pairs)
  np.testing.assert_array_equal(np.load(folder / 'new_items.npy'),
                                np.union1d(dataset.val_items, dataset.test_items))
  np.testing.assert_array_equal(np.load(folder / 'image_feat.npy'), dataset.features[0])
  np.testing.assert_array_equal(np.load(folder / 'text_feat.npy'), dataset.features[1])
  mask = np.load(folder / 'missing_items_0.5.npy', allow_pickle=True).item()
  available = np.asarray(dataset.availability, bool)
  np.testing.assert_array_equal(mask['v'], np.flatnonzero(~available[:, 0] & available[:, 1]))
  np.testing.assert_array_equal(mask['t'], np.flatnonzero(available[:, 0] & ~available[:, 1]))
  np.testing.assert_array_equal(mask['all'], np.flatnonzero(~available.any(axis=1)))
  assert len(mask['v']) + len(mask['t']) > 0  # make_config's FTMT: some new items miss one.
  assert "missing_ratio: 0.5" in (folder / 'dataset.yaml').read_text()


@pytest.mark.slow  # Two tiny trainings, then the script in a subprocess.
def test_candidate_pools_reranks_a_runs_vectors_under_both_pools(tmp_path, make_config):
  from milk_jax import run as run_lib  # pylint: disable=import-outside-toplevel
  found = {}
  for pool in ('all_new', 'split'):
    config = make_config(train={'num_epochs': 4, 'eval_every': 2})
    config.eval.candidates = pool
    found[pool] = run_lib.train_and_evaluate(config, str(tmp_path / pool / 'seed_0'))
  done = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'candidate_pools.py'),
                         str(tmp_path / 'all_new'), f'--split={tmp_path / "split"}'],
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  row = next(line for line in done.stdout.splitlines() if line.startswith('| seed_0 '))
  cells = [cell.strip() for cell in row.strip('|').split('|')]
  all_new, split = (float(x) for x in cells[2].split(' / '))
  # The all_new pool is the run's own test protocol: the script gives back its number.
  assert all_new == pytest.approx(found['all_new']['test']['ndcg@20'], abs=5e-5)
  assert split > all_new  # Fewer candidates, the same positives.
  assert int(cells[3]) == found['split']['best_epoch']
  assert float(cells[4]) == pytest.approx(found['split']['test']['ndcg@20'], abs=5e-5)


def _write_results(folder, results, name='results.json'):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, name), 'w') as f:
    json.dump(results, f)


def _fake_results(test, val, epoch=5, calibrated=None):
  groups = {'full': {'ndcg@20': test + 0.1}, 'missing_1': {'ndcg@20': test - 0.1}}
  results = {'best_epoch': epoch, 'val': {'ndcg@20': val}, 'test': {'ndcg@20': test},
             'test_by_group': groups, 'test_within_group': groups}
  if calibrated is not None:  # (test, val) of the calibrated scores.
    results = {**results, 'val_calibrated': {'ndcg@20': calibrated[1]},
               'test_uncalibrated': results['test'], 'test': {'ndcg@20': calibrated[0]},
               'test_by_group_uncalibrated': groups, 'test_within_group_uncalibrated': groups}
  return results


def test_study_table_pairs_by_seed_and_twins_a_calibrated_run(tmp_path):
  runs = tmp_path / 'ftmt'
  for seed, (erm, cal) in enumerate([(0.20, 0.23), (0.30, 0.31), (0.25, 0.27)]):
    _write_results(str(runs / 'ERM' / f'seed_{seed}'), _fake_results(erm, 0.2))
    _write_results(str(runs / 'X_cal' / f'seed_{seed}'),
                   _fake_results(erm + 0.01, 0.1, calibrated=(cal, 0.15)))
  # A calibrated run that predates val_calibrated takes it from eval.json of the same epoch.
  old = _fake_results(0.2, 0.2, calibrated=(0.2, 0.2))
  del old['val_calibrated']
  _write_results(str(runs / 'Y_cal' / 'seed_0'), old)
  _write_results(str(runs / 'Y_cal' / 'seed_0'), {'epoch': 5, 'val_calibrated': {'ndcg@20': 0.4}},
                 'eval.json')
  # Z has one run of its own; its calibrated twin's plain scores fill the other seeds.
  _write_results(str(runs / 'Z' / 'seed_0'), _fake_results(0.5, 0.2))
  for seed in range(3):
    _write_results(str(runs / 'Z_cal' / f'seed_{seed}'),
                   _fake_results(0.3, 0.2, calibrated=(0.3, 0.2)))
  done = subprocess.run([sys.executable, 'scripts/study_table.py', str(runs), '--order=X_cal'],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  rows = {line.split(' | ')[0][2:]: line.split(' | ') for line in done.stdout.splitlines()[2:]}
  assert list(rows) == ['X_cal', 'ERM', 'X', 'Y', 'Y_cal', 'Z', 'Z_cal']
  assert rows['Z'][1:4] == ['0,1,2', '0.2000', '0.3667 +- 0.1155']  # (0.5 + 0.3 + 0.3) / 3
  # X_cal: validation is val_calibrated (0.15); test 0.27 +- 0.04; minus ERM 0.02 on each seed.
  assert rows['X_cal'][2:4] == ['0.1500', '0.2700 +- 0.0400']
  assert rows['X_cal'][6].startswith('+0.0200 (+8.0%, p')
  # Its twin X: the plain scores, 0.01 above ERM on every seed (no spread: no p-value).
  assert rows['X'][2:4] == ['0.1000', '0.2600 +- 0.0500'] and rows['X'][6] == '+0.0100 (+4.0%, p nan)'
  assert rows['Y_cal'][2] == '0.4000' and rows['Y_cal'][6] == '+0.0000 (one seed)'
  assert rows['ERM'][4] == '0.3500 / 0.1500'  # Shared ranking: full / missing_1.
  # The selection view: validation minus ERM's, paired, with the standard error of the mean.
  done = subprocess.run([sys.executable, 'scripts/study_table.py', str(runs), '--validation',
                         '--order=ERM,X_cal,X'], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert done.stdout.splitlines()[2:] == ['| ERM | 0,1,2 | 0.2000 | - |',
                                          '| X_cal | 0,1,2 | 0.1500 | -0.0500 (0.0000) |',
                                          '| X | 0,1,2 | 0.1000 | -0.1000 (0.0000) |']
  missing = subprocess.run([sys.executable, 'scripts/study_table.py', str(tmp_path / 'none')],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
  assert missing.returncode == 1 and missing.stderr.startswith('error: ')


def _write_run(folder, loss: float, seconds: float, item_row: float) -> None:
  """A hand-made run folder of the files scripts/compare_runs.py reads."""
  folder.mkdir(parents=True)
  (folder / 'results.json').write_text(json.dumps(
      {'best_epoch': 5, 'test': {'ndcg@20': 0.25}, 'train_seconds': seconds}))
  (folder / 'config.json').write_text(json.dumps({'seed': 0}))
  (folder / 'metrics.jsonl').write_text(
      json.dumps({'epoch': 1, 'loss': loss, 'seconds': seconds, 'triples_per_second': 1 / seconds})
      + '\n')
  np.savez(folder / 'vectors.npz', users=np.ones((2, 3), np.float32),
           items=np.full((4, 3), item_row, np.float32))


def test_compare_runs_ignores_timings_and_finds_one_ulp(tmp_path):
  spec = importlib.util.spec_from_file_location(
      'compare_runs', os.path.join(REPO, 'scripts', 'compare_runs.py'))
  compare = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(compare)
  _write_run(tmp_path / 'a' / 'run_x', loss=0.5, seconds=1.0, item_row=0.1)
  _write_run(tmp_path / 'b' / 'run_x', loss=0.5, seconds=7.0, item_row=0.1)  # Slower: same.
  assert compare.main(['compare_runs.py', str(tmp_path / 'a'), str(tmp_path / 'b')]) == 0
  one_ulp = float(np.nextafter(np.float32(0.1), np.float32(1)))
  _write_run(tmp_path / 'c' / 'run_x', loss=0.5, seconds=1.0, item_row=one_ulp)
  assert compare.differences(tmp_path / 'a' / 'run_x', tmp_path / 'c' / 'run_x') == ['vectors.npz']
  _write_run(tmp_path / 'd' / 'run_x', loss=0.5 + 1e-16, seconds=1.0, item_row=0.1)
  assert compare.differences(tmp_path / 'a' / 'run_x', tmp_path / 'd' / 'run_x') == [
      'metrics.jsonl']
  (tmp_path / 'e').mkdir()
  assert compare.main(['compare_runs.py', str(tmp_path / 'a'), str(tmp_path / 'e')]) == 1
  # A config field added since (only AFTER has it) is not a difference; a changed one is.
  added = tmp_path / 'f' / 'run_x'
  _write_run(added, loss=0.5, seconds=1.0, item_row=0.1)
  (added / 'config.json').write_text(json.dumps({'seed': 0, 'train': {'new_field': True}}))
  assert compare.differences(tmp_path / 'a' / 'run_x', added) == []
  (added / 'config.json').write_text(json.dumps({'seed': 1, 'train': {'new_field': True}}))
  assert compare.differences(tmp_path / 'a' / 'run_x', added) == ['config.json']
  assert compare.differences(added, tmp_path / 'a' / 'run_x') == ['config.json']  # Removed.


def _scale_module():
  return _script_module('scale_benchmark')


def test_scale_grid_varies_one_axis_at_a_time_around_the_base_point():
  scale = _scale_module()
  points = {(p['users'], p['items'], p['interactions']): p['axes']
            for p in scale.grid_points('full')}
  assert points[(100_000, 50_000, 2_000_000)] == 'users+items+interactions'
  assert points[(1_000_000, 50_000, 2_000_000)] == 'users'
  assert points[(100_000, 500_000, 2_000_000)] == 'items'
  assert points[(100_000, 50_000, 20_000_000)] == 'interactions'
  assert points[(1_000_000, 500_000, 20_000_000)] == 'corner'
  assert len(points) == 11  # 3 axes x 4 values, the base point once, and the corner.


def test_scale_slopes_are_log_log_fits_per_axis():
  scale = _scale_module()
  rows = [{'axes': 'users+items+interactions', 'users': 10, 'items': 5, 'interactions': 100,
           'epoch_seconds': 2.0, 'val_seconds': 1.0},
          {'axes': 'interactions', 'users': 10, 'items': 5, 'interactions': 1000,
           'epoch_seconds': 20.0, 'val_seconds': 1.0},
          {'axes': 'users', 'users': 40, 'items': 5, 'interactions': 100,
           'epoch_seconds': 2.0, 'val_seconds': 16.0}]
  slopes = scale.fit_slopes(rows)
  assert slopes['interactions']['epoch'] == pytest.approx(1.0)
  assert slopes['interactions']['val'] == pytest.approx(0.0, abs=1e-9)
  assert slopes['users']['val'] == pytest.approx(2.0)  # 16x the time for 4x the users.
  assert np.isnan(slopes['items']['epoch'])  # One point on the items axis: no fit.
  assert np.isnan(slopes['interactions']['data'])  # Not measured.


def test_scale_benchmark_writes_its_table_and_figure(tmp_path):
  # One point of the tiny grid in its child process: ~15 s on an idle 2-core CPU.
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true'}
  done = subprocess.run([sys.executable, 'scripts/scale_benchmark.py', str(tmp_path),
                         '--grid=tiny', '--batch_size=256', '--only=u300_i400_n1500'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  with open(tmp_path / 'scale.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['users'], r['items'], r['interactions'], r['axes']) for r in rows] == [
      ('300', '400', '1500', 'interactions')]
  row = rows[0]
  assert row['status'] == 'ok', row
  for column in ('data_seconds', 'compile_seconds', 'first_epoch_seconds', 'epoch_seconds',
                 'triples_per_second', 'val_seconds', 'test_seconds', 'recommend_seconds',
                 'load_before', 'load_after'):
    assert float(row[column].split()[0]) > 0, column
  assert int(row['train_interactions']) < 1500
  assert float(row['peak_rss_mib']) >= float(row['rss_after_eval_mib']) >= float(
      row['rss_after_data_mib']) > 0
  summary = json.loads((tmp_path / 'scale.json').read_text())
  assert summary['slopes']['interactions']['epoch'] is None  # One point: nothing to fit.
  assert (tmp_path / 'scale.png').read_bytes()[:4] == b'\x89PNG'
  assert '| 300 | 400 | 1,500 |' in (tmp_path / 'scale.md').read_text()


def test_a_scale_point_past_its_time_limit_is_cut_and_says_where(tmp_path):
  scale = _scale_module()
  point = {'name': 'u300_i400_n3000', 'users': 300, 'items': 400, 'interactions': 3000,
           'axes': 'interactions'}
  row = scale.run_point(point, str(tmp_path), 256, timeout=0.5)  # Not even JAX imports in time.
  assert row['status'] == 'cut at 0.5 s during data', row
  assert row['wall_seconds'] < 30 and 'epoch_seconds' not in row
