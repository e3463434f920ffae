"""The package's import layers: every import points down or sideways, and none closes a cycle.

Layers, bottom to top (a module may import its own layer and the ones below):
  0 leaves           errors, faults, interrupt, config_fields, topk, seed_statistics, distributed
  1 data             milk_jax/data/
  2 methods          milk_jax/methods/ (the contract, shared layers, one module per method)
  3 run-folder tools runfolder, checkpoint, evaluate, calibration, plots, sharding, config, serving
  4 training         milk_jax/training/
  5 the orchestrator run
  6 users of runs    api, new_items, recommend, experiment, report, benchmark
  7 entry points     cli, the package's own __init__ (load)
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'milk_jax'

_TOP_LEVEL = {
    'errors': 0, 'faults': 0, 'interrupt': 0, 'config_fields': 0, 'topk': 0, 'seed_statistics': 0,
    'distributed': 0,
    'runfolder': 3, 'checkpoint': 3, 'evaluate': 3, 'calibration': 3, 'plots': 3,
    'sharding': 3, 'config': 3, 'serving': 3,
    'run': 5,
    'api': 6, 'new_items': 6, 'recommend': 6, 'experiment': 6, 'report': 6, 'report_figures': 6,
    'benchmark': 6,
    'cli': 7, '': 7,
}
_PACKAGES = {'data': 1, 'methods': 2, 'training': 4}


def module_name(path: pathlib.Path) -> str:
  """'milk_jax.data.ids' for milk_jax/data/ids.py, 'milk_jax.data' for its __init__.py."""
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def layer(module: str) -> int:
  """The layer of 'milk_jax.x.y'; a KeyError names a module the table above does not place."""
  parts = module.split('.')[1:]
  if parts and parts[0] in _PACKAGES:
    return _PACKAGES[parts[0]]
  return _TOP_LEVEL['' if not parts else parts[0]]


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
  if not node.level:
    return node.module or ''
  base = module.split('.') if is_package else module.split('.')[:-1]
  base = base[:len(base) - (node.level - 1)]
  return '.'.join(base + ([node.module] if node.module else []))


def _resolve(name: str) -> str | None:
  """The milk_jax module `name` refers to (a module, or the module defining a name), or None."""
  if not name.startswith('milk_jax'):
    return None
  while name:
    path = PACKAGE.parent / name.replace('.', '/')
    if path.with_suffix('.py').exists() or (path / '__init__.py').exists():
      return name
    name = name.rpartition('.')[0]
  return None


def imports_of(path: pathlib.Path) -> list[tuple[str, int, bool]]:
  """(imported milk_jax module, line, inside a function) for every import in `path`."""
  module = module_name(path)
  tree = ast.parse(path.read_text())
  nested = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      nested.update(id(n) for n in ast.walk(node) if n is not node)
  found = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.ImportFrom):
      target = _target(module, path.name == '__init__.py', node)
      names = [f'{target}.{alias.name}' for alias in node.names]
    elif isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    for name in names:
      resolved = _resolve(name)
      if resolved is not None and resolved != module:
        found.append((resolved, node.lineno, id(node) in nested))
  return found


def import_graph() -> dict[str, list[tuple[str, int, bool]]]:
  return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob('*.py'))}


def test_every_module_has_a_layer():
  unplaced = []
  for module in import_graph():
    try:
      layer(module)
    except KeyError:
      unplaced.append(module)
  assert not unplaced, f'modules missing from the layer table of {__file__}: {unplaced}'


def test_imports_point_down_or_sideways():
  upward = [f'{module} (layer {layer(module)}) imports {target} (layer {layer(target)}), '
            f'line {line}'
            for module, edges in import_graph().items() for target, line, _ in edges
            if layer(target) > layer(module)]
  assert not upward, '\n'.join(upward)


def test_no_import_inside_a_function():
  """A function-level import of milk_jax code is how a cycle hides; none is needed.

  The one exception is the package's own `milk_jax.load`, which imports the serving API
  when called so that `import milk_jax.data` does not load every layer above it.
  """
  hidden = [f'{module} imports {target} inside a function, line {line}'
            for module, edges in import_graph().items() for target, line, nested in edges
            if nested and module != 'milk_jax']
  assert not hidden, '\n'.join(hidden)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state = {}

  def visit(node, trail):
    state[node] = 'open'
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 'open':
        return trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
      if nxt not in state:
        found = visit(nxt, trail + [nxt])
        if found:
          return found
    state[node] = 'done'
    return None

  for start in sorted(graph):
    if start not in state:
      found = visit(start, [start])
      if found:
        return found
  return None


def test_no_import_cycle():
  graph = {m: {t for t, _, _ in edges} for m, edges in import_graph().items()}
  # A package's __init__ importing its own submodules is how Python packages work, and a
  # submodule importing its package's contract is the method seam: neither is a cycle of
  # concerns, so a package and its submodules are not joined through the __init__ edge.
  for module, targets in graph.items():
    graph[module] = {t for t in targets if not t.startswith(module + '.')}
  cycle = _cycle(graph)
  assert cycle is None, ' -> '.join(cycle)


def test_data_imports_nothing_above_it():
  above = [f'{module} imports {target}' for module, edges in import_graph().items()
           if module.startswith('milk_jax.data') for target, _, _ in edges
           if not target.startswith(('milk_jax.data', 'milk_jax.errors'))]
  assert not above, '\n'.join(above)


@pytest.mark.parametrize('module,expected', [('milk_jax.data.ids', 1), ('milk_jax.run', 5),
                                             ('milk_jax.methods.milk.model', 2)])
def test_layer_table_reads_packages_and_modules(module, expected):
  assert layer(module) == expected


def test_cycle_finder_finds_a_known_cycle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
