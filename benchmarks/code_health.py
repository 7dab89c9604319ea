"""The house's structure in numbers: import cycles inside odm_basicsr, the largest module, function-local imports,
and the modules each layer imports. Prints a table and writes benchmarks/results/code_health.json.

    .venv/bin/python benchmarks/code_health.py [--repo DIR]

A cycle is a strongly connected set of modules of the package that import each other (module-level or function-local
imports alike). Function-local imports are counted per kind: of BasicSR, of optional dependencies (onnx, onnxruntime,
matplotlib, openvino), of the package itself, and of anything else. The house keeps only two kinds
(``allowed_local_import``): optional dependencies, and in ``_compat`` the imports that must wait for its import fixes
(BasicSR, and the distutils shim that comes before it).
"""
import argparse
import ast
import json
import os
import os.path as osp

OPTIONAL = ('onnx', 'onnxruntime', 'matplotlib', 'openvino')


def module_name(root, path):
    rel = osp.relpath(path, root)[:-3].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def package_modules(root, package='odm_basicsr'):
    found = {}
    for folder, _, files in os.walk(osp.join(root, package)):
        for name in files:
            if name.endswith('.py'):
                path = osp.join(folder, name)
                found[module_name(root, path)] = path
    return found


def imports_of(name, path, modules):
    """[(imported module, local, lineno)] of the module ``name``: every import, with 'local' true inside a function."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    out = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, inner, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ''
                if child.level:
                    parts = package.split('.')
                    parts = parts[:len(parts) - child.level + 1]
                    base = '.'.join(parts + ([base] if base else []))
                for alias in child.names:  # `from . import x` or `from .quant import export`: a submodule
                    sub = f'{base}.{alias.name}'
                    out.append((sub if sub in modules else base, inner, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


def allowed_local_import(module, target):
    """Whether a function-local import of ``target`` inside ``module`` has a reason to be local."""
    top = target.split('.')[0]
    return top in OPTIONAL or (module == 'odm_basicsr._compat' and top in ('basicsr', 'distutils', 'setuptools'))


def local_imports(root):
    """[(module, imported module, lineno)] of every function-local import in the package."""
    modules = package_modules(root)
    return [(name, target, line) for name, path in sorted(modules.items())
            for target, inner, line in imports_of(name, path, modules) if inner]


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return result


def import_graph(root):
    modules = package_modules(root)
    graph, local = {}, {'basicsr': 0, 'optional': 0, 'package': 0, 'other': 0}
    for name, path in modules.items():
        edges = set()
        for target, inner, _ in imports_of(name, path, modules):
            top = target.split('.')[0]
            if target in modules and target != name:
                edges.add(target)
            if inner:
                kind = ('basicsr' if top == 'basicsr' else 'optional' if top in OPTIONAL else
                        'package' if top == 'odm_basicsr' else 'other')
                local[kind] += 1
        graph[name] = sorted(edges)
    return modules, graph, local


def report(root):
    modules, graph, local = import_graph(root)
    sizes = {name: sum(1 for _ in open(path, encoding='utf-8')) for name, path in modules.items()}
    largest = max(sizes, key=sizes.get)
    return dict(cycles=cycles(graph), largest_module=largest, largest_lines=sizes[largest],
                total_lines=sum(sizes.values()), function_local_imports=local,
                function_local_total=sum(local.values()), modules=len(modules))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repo', default=osp.dirname(osp.dirname(osp.abspath(__file__))))
    parser.add_argument('--out', default=None, help='JSON path (default benchmarks/results/code_health.json)')
    args = parser.parse_args()
    result = report(args.repo)
    print(f'| modules | lines | largest module | import cycles | function-local imports (basicsr / optional / '
          'package / other) |')
    print('|---|---|---|---|---|')
    local = result['function_local_imports']
    print(f"| {result['modules']} | {result['total_lines']} | {result['largest_module']} ({result['largest_lines']}) "
          f"| {len(result['cycles'])} | {result['function_local_total']} ({local['basicsr']} / {local['optional']} / "
          f"{local['package']} / {local['other']}) |")
    for cycle in result['cycles']:
        print('cycle:', ' <-> '.join(cycle))
    out = args.out or osp.join(args.repo, 'benchmarks', 'results', 'code_health.json')
    os.makedirs(osp.dirname(out), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
