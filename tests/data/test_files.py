"""milk_jax/data/files.py: checked reads of .npy arrays, UTF-8 text and its lines, TSV tables."""

import pytest

from milk_jax import data
from milk_jax.data import DataError
from milk_jax.data import files


def test_missing_files(tsv_folder, tsv_config, assert_data_error):
  (tsv_folder / 'text_feat.npy').unlink()
  assert_data_error(tsv_config(tsv_folder), str(tsv_folder / 'text_feat.npy'))
  assert_data_error(tsv_config(tsv_folder, interactions_file='other.tsv'),
                    str(tsv_folder / 'other.tsv'))


def test_corrupt_npy_header_refused(tsv_folder, tsv_config):
  path = tsv_folder / 'text_feat.npy'
  path.write_bytes(path.read_bytes().replace(b"'shape'", b"'sha(e'"))
  with pytest.raises(DataError, match=r'text_feat\.npy: cannot be read as a numeric \.npy'):
    data.load_dataset(tsv_config(tsv_folder))


@pytest.mark.parametrize('name,content', [
    ('interactions.tsv', 'utilisateur\tfilm\u00e9\n0\t1\n'),
    ('interactions.tsv', 'user\titem\n0\t1\n# caf\u00e9\n'),
    ('train.txt', '0 0 1 2\n# caf\u00e9\n'),
])
def test_latin1_text_refused(tmp_path, name, content, data_config, tsv_config, write_features,
                             write_milk):
  if name == 'train.txt':
    write_milk(tmp_path)
    config = data_config(format='milk', path=str(tmp_path))
  else:
    write_features(tmp_path)
    config = tsv_config(tmp_path)
  (tmp_path / name).write_bytes(content.encode('latin-1'))
  with pytest.raises(DataError, match=rf'{name}: not UTF-8 text \(invalid continuation byte'):
    data.load_dataset(config)


def test_utf8_bom_is_accepted(tsv_folder, tsv_config, catalogue):
  path = tsv_folder / 'interactions.tsv'
  path.write_bytes(b'\xef\xbb\xbf' + path.read_bytes())
  assert data.load_dataset(tsv_config(tsv_folder)).num_users == catalogue.NUM_USERS


def test_text_lines_split_at_newline_only():
  # str.splitlines would also break at \x0b, \x0c, \x1c, \x85 and U+2028.
  text = 'a\x0bb\x0cc\x1cd\x85e\u2028f\r\ng\n\nh'
  assert files.text_lines(text) == ['a\x0bb\x0cc\x1cd\x85e\u2028f', 'g', '', 'h']
  assert files.text_lines('x\n') == files.text_lines('x\r\n') == files.text_lines('x') == ['x']
  assert files.text_lines('') == []


def test_tsv_fields_keep_line_separators_other_than_newline(tmp_path):
  path = tmp_path / 'table.tsv'
  path.write_bytes('user\titem\r\na\u2028b\t1\r\nc\x1cd\t2\r\n'.encode('utf-8'))
  header, cells = files.read_tsv_text(path)
  assert header == ['user', 'item']
  assert cells.tolist() == [['a\u2028b', '1'], ['c\x1cd', '2']]
  path.write_bytes(b'user\titem\r\n0\t1\r\n2\t3\r\n')  # CRLF reads as LF does.
  header, table = files.read_tsv(path)
  assert header == ['user', 'item'] and table.tolist() == [[0, 1], [2, 3]]
