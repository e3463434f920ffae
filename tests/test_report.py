import json

import pytest

from milk_jax import report


def _write(folder, name, recall, ndcg):
  run = folder / name
  run.mkdir(parents=True)
  (run / 'results.json').write_text(json.dumps(
      {'test': {'recall@20': recall, 'ndcg@20': ndcg}, 'val': {'ndcg@20': ndcg},
       'test_by_group': {'missing_1': {'ndcg@20': 2 * ndcg}}}))


def test_summary_table_mean_and_std(tmp_path):
  _write(tmp_path / 'milk', '0', 0.2, 0.1)
  _write(tmp_path / 'milk', '1', 0.4, 0.3)
  (tmp_path / 'milk' / 'unfinished').mkdir()
  table = report.summary_table([str(tmp_path / 'milk')], ('test.recall@20', 'test.ndcg@20'))
  row = table.splitlines()[2]
  # mean 0.3, sample std sqrt(0.02) = 0.1414.
  assert '| 2 | 0.3000 +- 0.1414 | 0.2000 +- 0.1414 |' in row


def test_empty_folder_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='results.json'):
    report.collect(str(tmp_path))


def test_nested_metric_paths(tmp_path):
  _write(tmp_path / 'milk', '0', 0.2, 0.1)
  assert report.metric(report.collect(str(tmp_path / 'milk'))[0],
                       'test_by_group.missing_1.ndcg@20') == 0.2
