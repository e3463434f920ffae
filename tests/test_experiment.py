"""Tests for milk_jax.experiment: planning, checking and running a grid (its summary
end to end; the summaries themselves in test_report.py), and the experiment configs."""

import csv
import glob
import json
import os

import numpy as np
import pytest

from configs.experiments import base
from milk_jax import experiment
from milk_jax import report
from milk_jax import run as run_lib
from milk_jax.errors import ConfigError
from milk_jax.errors import ConfigFileError


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def result_files(workdir):
  return sorted(glob.glob(os.path.join(workdir, '*', '*', 'seed_*', 'results.json')))


@pytest.mark.slow  # Trains a grid twice.
def test_tiny_grid_summarises_then_resumes_without_retraining(tmp_path, monkeypatch,
                                                              tiny_experiment):
  workdir = str(tmp_path / 'grid')
  experiment.run_experiment(tiny_experiment(), workdir)

  runs = result_files(workdir)
  assert [os.path.relpath(r, workdir) for r in runs] == [
      f'ftmt/{v}/seed_{s}/results.json' for v in ('ERM', 'MILK') for s in (0, 1)]
  rows = read_csv(os.path.join(workdir, 'summary.csv'))
  assert list(rows[0]) == list(report.CSV_COLUMNS)
  metrics = ['test.ndcg@20', 'test_by_group.full.ndcg@20', 'test_by_group.missing_1.ndcg@20']
  assert [(r['setting'], r['variant'], r['metric']) for r in rows] == [
      ('ftmt', v, m) for v in ('ERM', 'MILK') for m in metrics]
  # The summary agrees with the runs' own results.json.
  milk = [json.load(open(r))['test']['ndcg@20'] for r in runs[2:]]
  erm = [json.load(open(r))['test']['ndcg@20'] for r in runs[:2]]
  milk_row = rows[3]
  assert int(milk_row['n']) == 2
  np.testing.assert_allclose(float(milk_row['mean']), np.mean(milk), rtol=1e-5)
  np.testing.assert_allclose(float(milk_row['std']), np.std(milk, ddof=1), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(float(milk_row['diff_mean']), np.mean(milk) - np.mean(erm),
                             rtol=1e-4, atol=1e-7)
  assert rows[0]['diff_mean'] == '' and rows[0]['p_value'] == ''  # The baseline's own rows.

  summary = open(os.path.join(workdir, 'summary.md')).read()
  assert '## FTMT' in summary and 'Paired difference to ERM' in summary
  assert summary.count('**') >= 2 * len(metrics)  # One bold best per column.
  assert 'Relative gain over ERM per group' in summary
  for name in ('bars', 'groups', 'group_gain'):
    with open(os.path.join(workdir, f'{name}.png'), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'

  # Again: every run is finished, so nothing trains and no results.json is rewritten.
  mtimes = [os.stat(r).st_mtime_ns for r in runs]
  def must_not_train(config, workdir):
    raise AssertionError(f'retrained {workdir}')
  monkeypatch.setattr(run_lib, 'train_and_evaluate', must_not_train)
  experiment.run_experiment(tiny_experiment(), workdir)
  assert [os.stat(r).st_mtime_ns for r in runs] == mtimes
  assert read_csv(os.path.join(workdir, 'summary.csv')) == rows

  # A lost results.json with train_missing=False: the summary leaves that run out.
  lost = runs[3] + '.aside'
  os.replace(runs[3], lost)
  experiment.run_experiment(tiny_experiment(train_missing=False), workdir)
  partial = read_csv(os.path.join(workdir, 'summary.csv'))
  assert int(partial[3]['n']) == 1 and partial[:3] == rows[:3]
  os.replace(lost, runs[3])

  # A lost results.json: only that run trains again (from its checkpoints).
  monkeypatch.undo()
  trained = []
  real_train = run_lib.train_and_evaluate
  def counting_train(config, workdir):
    trained.append(workdir)
    return real_train(config, workdir)
  monkeypatch.setattr(run_lib, 'train_and_evaluate', counting_train)
  os.remove(runs[3])
  experiment.run_experiment(tiny_experiment(), workdir)
  assert trained == [os.path.dirname(runs[3])]
  assert read_csv(os.path.join(workdir, 'summary.csv')) == rows


def test_experiments_sharing_a_runs_dir_train_common_runs_once(tmp_path, monkeypatch,
                                                               tiny_experiment):
  runs_dir = str(tmp_path / 'runs')
  first = tiny_experiment(num_seeds=1, plots=(), runs_dir=runs_dir)
  experiment.run_experiment(first, str(tmp_path / 'first'))
  trained = []
  real_train = run_lib.train_and_evaluate
  def counting_train(config, workdir):
    trained.append(os.path.relpath(workdir, runs_dir))
    return real_train(config, workdir)
  monkeypatch.setattr(run_lib, 'train_and_evaluate', counting_train)
  second = tiny_experiment([('ERM', base.ERM), ('no_CMAM', base.NO_CMAM), ('MILK', base.MILK)],
                           num_seeds=1, plots=(), runs_dir=runs_dir)
  rows = experiment.run_experiment(second, str(tmp_path / 'second'))
  assert trained == [os.path.join('ftmt', 'no_CMAM', 'seed_0')]
  assert {r['variant'] for r in rows} == {'ERM', 'no_CMAM', 'MILK'}
  # Each experiment keeps its own summary; the run folders are only in runs_dir.
  for name in ('first', 'second'):
    assert os.path.exists(tmp_path / name / 'summary.csv')
    assert not os.path.exists(tmp_path / name / 'ftmt')
  # A run folder of the same name but another config is refused, not overwritten.
  changed = tiny_experiment([('ERM', base.ERM), ('MILK', {'train.beta': 5.0})],
                            num_seeds=1, plots=(), runs_dir=runs_dir)
  with pytest.raises(ConfigError, match='ftmt/MILK/seed_0.*train.beta'):
    experiment.run_experiment(changed, str(tmp_path / 'third'))


def test_changed_experiment_in_a_used_folder_is_refused(tmp_path, monkeypatch, tiny_experiment):
  workdir = str(tmp_path / 'grid')
  config = tiny_experiment(num_seeds=1, plots=())
  experiment.run_experiment(config, workdir)
  changed = tiny_experiment([('ERM', base.ERM), ('MILK', {'train.beta': 5.0})],
                            num_seeds=1, plots=())
  monkeypatch.setattr(run_lib, 'train_and_evaluate', lambda *a: pytest.fail('trained'))
  with pytest.raises(ConfigError, match='ftmt/MILK/seed_0.*train.beta'):
    experiment.run_experiment(changed, workdir)


@pytest.mark.slow  # Trains a grid, then continues it.
def test_a_grid_with_more_epochs_continues_its_finished_runs(tmp_path, tiny_experiment):
  workdir = str(tmp_path / 'grid')
  short = tiny_experiment(num_seeds=1, plots=())
  experiment.run_experiment(short, workdir)
  longer = tiny_experiment(num_seeds=1, plots=())
  longer.train.num_epochs = 4
  rows = experiment.run_experiment(longer, workdir)
  # Every run now ran 4 epochs, and the summary is built from those runs.
  for path in result_files(workdir):
    results = json.load(open(path))
    assert results['epochs_run'] == 4 or results['stopped_early']
    saved = json.load(open(os.path.join(os.path.dirname(path), 'config.json')))
    assert saved['train']['num_epochs'] == 4
  fresh = experiment.run_experiment(longer, str(tmp_path / 'fresh'))
  means = lambda summary: [(r['variant'], r['metric'], r['mean']) for r in summary]
  assert means(rows) == means(fresh)
  # Fewer epochs than the runs already trained cannot be honoured: a clear error.
  shorter = tiny_experiment(num_seeds=1, plots=())
  shorter.train.num_epochs = 1
  with pytest.raises(ConfigError, match='has trained 4 epochs, more than '
                     'config.train.num_epochs=1'):
    experiment.run_experiment(shorter, workdir)


@pytest.mark.parametrize('variants, message', [
    ([('ERM', base.ERM), ('MILK', {'model.use_invariants': False})], "'model.use_invariants'"),
    ([('ERM', base.ERM), ('MILK', {'modle.alpha': 1.0})], "'modle.alpha'"),
    ([('ERM', base.ERM), ('MILK', {'model.use_alignment': 'no'})], 'model.use_alignment'),
    ([('ERM', base.ERM), ('MILK', {'seed': 3})], 'grid chooses'),
    ([('ERM', base.ERM), ('MILK', {'model.alpha': -1.0})], 'model.alpha'),
    ([('ERM', base.ERM), ('a/b', {})], 'names a folder'),
    ([('MILK', base.MILK)], "baseline 'ERM'"),
])
def test_bad_grid_fails_before_any_run(tmp_path, monkeypatch, variants, message, tiny_experiment):
  monkeypatch.setattr(run_lib, 'train_and_evaluate', lambda *a: pytest.fail('trained'))
  with pytest.raises(ConfigError, match=message):
    experiment.run_experiment(tiny_experiment(variants), str(tmp_path / 'grid'))
  assert not os.path.exists(tmp_path / 'grid')


def test_experiment_configs_plan_their_grids():
  from configs.experiments import ablation, environments, groups, imputation, overall, sensitivity
  # Planning reads no data, so the ml100k configs plan even where the data is absent.
  expected = {overall: 3 * (3 + 9 + 1) * 5, ablation: 2 * 4 * 5, environments: 5 * 5,
              imputation: 2 * 5 * 5, sensitivity: 15 * 5, groups: (3 + 2) * 5}
  for module, count in expected.items():
    config = experiment.with_method_variants(module.get_config('ml100k'))
    assert config.train.beta == 0.0  # MILK keeps the dataset's validation-chosen beta.
    assert len(experiment.plan_runs(config, '/nonexistent')) == count, module.__name__
  # baby_synthetic's MILK already uses the paper's beta: no duplicate variant.
  assert [v for v, _ in overall.get_config('baby_synthetic').experiment.variants] == ['ERM', 'MILK']
  with_methods = experiment.with_method_variants(overall.get_config('ml100k')).experiment
  assert [v for v, _ in with_methods.variants][-10:] == [
      'DUIF', 'DropoutNet', 'MTPR', 'Heater', 'CLCRec', 'CCFCRec', 'GAR', 'GAR_own_cadence',
      'GoRec', 'MICRO']
  assert dict(with_methods.variants)['GAR_own_cadence'] == {
      'method': 'gar', 'train.eval_every': 1, 'train.patience': 10}
  assert with_methods.baseline == 'MILK'
  m3 = groups.get_config()
  assert len(m3.data.modalities) == 3 and tuple(m3.data.group_fractions) == (0.1, 0.45, 0.45)
  assert tuple(groups.get_config('ml100k').data.group_fractions) == (0.1, 0.9)


def test_dataset_config_by_name_or_path():
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  by_path = base.dataset_config(os.path.join(repo, 'configs', 'ml100k.py'))
  assert by_path.to_json() == base.dataset_config('ml100k').to_json()
  with pytest.raises(ConfigFileError, match="'nosuch' .* the datasets are .*ml100k"):
    base.dataset_config('nosuch')
  with pytest.raises(ConfigFileError, match='no such dataset config file'):
    base.dataset_config('/absent/mine.py')


def test_a_training_config_is_refused(make_config):
  with pytest.raises(ConfigError, match='experiment'):
    experiment.run_experiment(make_config(), '/nonexistent')


def test_own_cadence_adds_the_originals_validation_beside_the_shared_one(tiny_experiment):
  config = tiny_experiment([('MILK', {})], methods=('duif', 'gar'), own_cadence=('gar',),
                           baseline='MILK')
  variants = experiment.with_method_variants(config).experiment.variants
  assert [v for v, _ in variants] == ['MILK', 'DUIF', 'GAR', 'GAR_own_cadence']
  runs = {r.variant: r.config.train for r in experiment.plan_runs(
      experiment.with_method_variants(config), '/nonexistent')}
  assert (runs['GAR'].eval_every, runs['GAR'].patience) == (1, 3)  # make_config's protocol
  assert (runs['GAR_own_cadence'].eval_every, runs['GAR_own_cadence'].patience) == (1, 10)
  # Leaving the methods out leaves their own-cadence runs out too.
  config.experiment.methods = ()
  assert [v for v, _ in experiment.with_method_variants(config).experiment.variants] == ['MILK']


def test_only_runs_the_named_variants_and_the_baseline(tiny_experiment):
  config = tiny_experiment([('ERM', base.ERM), ('MILK', base.MILK), ('MILK_cal', {})],
                           only=('MILK_cal',))
  kept = experiment.only_variants(config).experiment.variants
  assert [v for v, _ in kept] == ['ERM', 'MILK_cal']  # The baseline stays for the paired diffs.
  assert [r.variant for r in experiment.plan_runs(experiment.only_variants(config), '/x')] == [
      'ERM', 'ERM', 'MILK_cal', 'MILK_cal']
  config.experiment.only = ('MILK_call',)
  with pytest.raises(ConfigError, match=r"experiment.only: unknown variants \['MILK_call'\]"):
    experiment.only_variants(config)


def test_the_fusion_study_plans_its_settings_per_dataset():
  from configs.experiments import fusion
  ml100k = fusion.get_config('ml100k')
  names = [v for v, _ in ml100k.experiment.variants]
  assert ml100k.experiment.settings == ('ftmt', 'mtmt') and len(names) == 22
  assert dict(ml100k.experiment.variants)['MILK_cal'] == {'eval.calibration': 'validation'}
  assert dict(ml100k.experiment.variants)['MILK_drop_cal'] == {
      'train.modality_dropout': 0.5, 'eval.calibration': 'validation'}
  assert len(experiment.plan_runs(ml100k, '/nonexistent')) == 2 * 22 * 5
  m3 = fusion.get_config('synthetic_m3')
  assert m3.experiment.settings == ('groups',)
  assert tuple(m3.data.group_fractions) == (0.1, 0.45, 0.45)
  assert 'MILK_beta1000_present' in [v for v, _ in m3.experiment.variants]  # beta 10 there
  assert fusion.get_config('tiktok_mm').experiment.settings == ('ftmt',)


def test_the_dgmrec_study_plans_the_shared_and_dgmrec_s_own_protocol():
  from configs.experiments import dgmrec
  ml100k = dgmrec.get_config('ml100k')
  variants = dict(ml100k.experiment.variants)
  assert ml100k.experiment.settings == ('ftmt', 'mtmt') and ml100k.data.split == 'random'
  assert variants['DGMRec_cal'] == {'method': 'dgmrec', 'train.eval_every': 1,
                                    'train.patience': 10, 'eval.calibration': 'validation'}
  assert variants['MILK_present_drop_cal'] == {
      'model.fusion': 'present', 'train.modality_dropout': 0.5, 'eval.calibration': 'validation'}
  runs = experiment.plan_runs(ml100k, '/nonexistent')
  assert len(runs) == 2 * 7 * 5
  by_name = {(r.setting, r.variant, r.seed): r.config for r in runs}
  assert by_name['mtmt', 'DGMRec_cal', 4].train.eval_every == 1
  assert by_name['mtmt', 'ERM', 4].train.eval_every == ml100k.train.eval_every == 5
  own = dgmrec.get_config('ml100k,popularity')
  assert own.experiment.settings == ('stratified',) and own.data.split == 'popularity'
  assert dgmrec.get_config('tiktok_mm').experiment.settings == ('ftmt',)
  with pytest.raises(ConfigFileError, match="'ml100k,time': after the dataset only"):
    dgmrec.get_config('ml100k,time')


def test_own_cadence_of_a_method_without_one_is_refused(tiny_experiment):
  config = tiny_experiment([('MILK', {})], methods=('duif',), own_cadence=('duif',))
  with pytest.raises(ConfigError, match='own_cadence.*duif.*original cadence'):
    experiment.with_method_variants(config)


@pytest.mark.slow
def test_methods_of_a_grid_share_one_backbone_per_setting_and_seed(tmp_path, tiny_experiment):
  config = tiny_experiment([('MILK', {})], methods=('dropoutnet', 'heater'), baseline='MILK',
                           num_seeds=1)
  config.backbone.num_epochs = 3
  rows = experiment.run_experiment(config, str(tmp_path))
  assert {r['variant'] for r in rows} == {'MILK', 'DropoutNet', 'Heater'}
  shared = str(tmp_path / 'ftmt' / experiment.BACKBONE_FOLDER / 'seed_0')
  for variant in ('DropoutNet', 'Heater'):
    with open(tmp_path / 'ftmt' / variant / 'seed_0' / 'config.json') as f:
      assert json.load(f)['backbone']['run_dir'] == shared
  # One backbone run: trained by the first reader, reused by the second.
  log = [json.loads(line) for line in open(os.path.join(shared, 'metrics.jsonl'))]
  assert [r['epoch'] for r in log if r['kind'] == 'train'] == [1, 2, 3]
  assert not os.path.exists(tmp_path / 'ftmt' / 'Heater' / 'seed_0' / 'backbone')


def test_the_ablation_draws_its_missing_groups():
  from configs.experiments import ablation  # pylint: disable=import-outside-toplevel
  exp = ablation.get_config('default').experiment
  assert 'groups' in exp.plots and 'test_by_group.*.ndcg@20' in exp.metrics


def test_grid_progress_gives_the_time_left(tmp_path, monkeypatch, caplog, tiny_experiment):
  runs = experiment.plan_runs(tiny_experiment(), str(tmp_path))  # ERM 0, 1, MILK 0, 1.
  done = {'test': {'ndcg@20': 0.5}, 'best_epoch': 2}
  monkeypatch.setattr(experiment, 'finished_results',
                      lambda run: done if (run.variant, run.seed) == ('MILK', 0) else None)
  monkeypatch.setattr(run_lib, 'train_and_evaluate', lambda config, workdir: done)
  # The three trainings take 10 s, 30 s and 20 s.
  clock = iter([0.0, 10.0, 100.0, 130.0, 200.0, 220.0])
  monkeypatch.setattr(experiment.time, 'perf_counter', lambda: next(clock))
  caplog.set_level('INFO', logger='milk_jax.experiment')
  experiment.execute(runs, 'test.ndcg@20')
  lines = [m for m in caplog.messages if ': training in' not in m]
  assert lines == [
      '[1/4] ftmt/ERM/seed_0: trained in 10.0s, best epoch 2, test.ndcg@20 0.5000; '
      'eta 20s for 2 more runs',
      '[2/4] ftmt/ERM/seed_1: trained in 30.0s, best epoch 2, test.ndcg@20 0.5000; '
      'eta 20s for 1 more run',
      '[3/4] ftmt/MILK/seed_0: finished earlier, best epoch 2, test.ndcg@20 0.5000; '
      'eta 20s for 1 more run',
      '[4/4] ftmt/MILK/seed_1: trained in 20.0s, best epoch 2, test.ndcg@20 0.5000']
