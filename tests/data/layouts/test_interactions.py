"""milk_jax/data/layouts/interactions.py: the `interactions` layout and its table."""

import pytest

from milk_jax import data
from milk_jax.data import DataError
from milk_jax.data.layouts import interactions
from milk_jax.data.layouts import mmrec


def test_interactions_reader_expected_pairs(tmp_path, write_features, write_tsv, as_set):
  write_features(tmp_path, num_items=5)
  write_tsv(tmp_path / 'log.tsv', 'user\titem', [(0, 1), (2, 4), (0, 1), (1, 0)])
  raw = interactions.read_interactions(tmp_path, ('image', 'text'), 'log.tsv')
  assert as_set(raw.pairs) == {(0, 1), (2, 4), (1, 0)} and len(raw.pairs) == 3
  assert raw.num_users == 3 and raw.features[0].shape == (5, 3)


@pytest.mark.parametrize('user,message', [
    ('1000000000000', r'interactions\.tsv: user ids are sparse: max id 1000000000000 but 5 '
     r'distinct ids, leaving 999999999996 of 1000000000001 user rows unused; ids must be '
     r'dense and 0-based'),
    ('1e20', r'interactions\.tsv: user id 1e\+20 on data row 81 is out of range; ids must be '
     r'dense, 0-based and fit int32'),
])
def test_huge_user_id_refused(tsv_folder, user, message, tsv_config, write_tsv, dense_rows):
  write_tsv(tsv_folder / 'interactions.tsv', 'user\titem', [r[:2] for r in dense_rows()]
            + [(user, 0)])
  with pytest.raises(DataError, match=message):
    data.load_dataset(tsv_config(tsv_folder))


def test_user_id_gaps_within_the_margin_load(tsv_folder, tsv_config, write_tsv, catalogue):
  rows = [(u * 300, i) for u in range(catalogue.NUM_USERS)  # 897 unused rows.
          for i in range(catalogue.NUM_ITEMS)]
  write_tsv(tsv_folder / 'interactions.tsv', 'user\titem', rows)
  dataset = data.load_dataset(tsv_config(tsv_folder))
  assert dataset.num_users == 901 and dataset.inactive_counts()[0] == 901 - catalogue.NUM_USERS


@pytest.mark.parametrize('text,problem', [
    ('user\titem\n0\t1\n1\t2\t3\t4\n', 'malformed'),
    ('user\titem\n0\t1.5\n', 'non-integer'),
    ('user\titem\n0\tabc\n', 'malformed'),
    ('user\titem\n0\t1\n-1\t2\n', 'negative'),
    ('user\titem\n0\t1\n1\t25\n', 'item id 25 >= 20'),
    ('0\t1\n1\t2\n', 'header'),
    ('user\titem\n', 'no interaction rows'),
    ('user\titem\tts\tx\n0\t1\t2\t3\n', 'columns'),
])
def test_bad_interactions_file(tsv_folder, text, problem, tsv_config, assert_data_error):
  (tsv_folder / 'interactions.tsv').write_text(text)
  assert_data_error(tsv_config(tsv_folder), 'interactions.tsv', problem)


def test_min_rating_keeps_the_well_rated_rows(tmp_path, write_features, write_tsv, as_set):
  write_features(tmp_path, num_items=5)
  rows = [(0, 1, 5.0, 10), (0, 2, 3.5, 11), (1, 2, 4.0, 12), (2, 4, 1.0, 13), (1, 3, 4.5, 14)]
  write_tsv(tmp_path / 'interactions.tsv', 'user\titem\trating\ttimestamp', rows)
  read = interactions.read_interactions
  for ids in ('dense', 'raw'):
    options = interactions.TableOptions(ids=ids, min_rating=4.0)
    raw = read(tmp_path, ('image', 'text'), 'interactions.tsv', options)
    assert as_set(raw.pairs) == {(0, 1), (1, 2), (1, 3)}, ids
  # Dense ids keep the id space of the file; raw ids number only the users kept.
  assert read(tmp_path, ('image', 'text'), 'interactions.tsv', options).num_users == 2
  options = interactions.TableOptions(min_rating=4.0)
  assert read(tmp_path, ('image', 'text'), 'interactions.tsv', options).num_users == 3
  write_tsv(tmp_path / 'b.inter', 'userID\titemID\trating', [r[:3] for r in rows])
  raw = mmrec.read_mmrec(tmp_path, ('image', 'text'), 'b', options)
  assert as_set(raw.pairs) == {(0, 1), (1, 2), (1, 3)}


@pytest.mark.parametrize('header,rows,fields,message', [
    ('user\titem\ttimestamp', [(0, 1, 5)], {'min_rating': 4.0},
     r"interactions\.tsv: config\.data\.min_rating=4\.0 needs a column named 'rating', found "
     r"columns \['user', 'item', 'timestamp'\]"),
    ('user\titem\trating', [(0, 1, 3.0), (1, 2, 2.0)], {'min_rating': 4.0},
     r'interactions\.tsv: no row has a rating >= config\.data\.min_rating=4\.0 \(ratings lie '
     r'in \[2, 3\]\)'),
    ('user\titem\trating', [(0, 1, 3.0), (1, 2, 'nan')], {'min_rating': 1.0},
     r'interactions\.tsv: rating nan on data row 2 is not finite'),
    ('user\titem\trating', [(0, 1, 3.0), (1, 2, 'good')], {'min_rating': 1.0, 'ids': 'raw'},
     r"interactions\.tsv: rating 'good' on data row 2 is not a number"),
    ('user\titem', [(0, 1), (1, 2)], {'split': 'time'},
     r"interactions\.tsv: config\.data\.split=time needs timestamps, found columns \['user', "
     r"'item'\] without one"),
    ('user\titem\trating', [(0, 1, 3.0)], {'split': 'time'},
     r'interactions\.tsv: config\.data\.split=time needs timestamps'),
    ('user\titem\tdate\trating', [(0, 1, 5, 3.0)], {},
     r'interactions\.tsv: expected columns user, item\[, timestamp\]\[, rating\]'),
])
def test_bad_ratings_and_timestamps(tmp_path, header, rows, fields, message, tsv_config,
                                    write_features, write_tsv):
  write_features(tmp_path)
  write_tsv(tmp_path / 'interactions.tsv', header, rows)
  with pytest.raises(DataError, match=message):
    data.load_dataset(tsv_config(tmp_path, **fields))
