"""The house rules, checked: no import cycles, a quantization core below the BasicSR-facing layer, commands that share
one I/O module, one quantization config that owns its rules, and the ODM arch list taken from the registry."""
import importlib.util
import os.path as osp

import pytest
import torch.nn as nn

import odm_basicsr  # noqa: F401
from odm_basicsr.quant import QuantConfig, QuantConfigError, quantize_modules

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _code_health():
    spec = importlib.util.spec_from_file_location('code_health', osp.join(REPO, 'benchmarks', 'code_health.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def graph():
    modules, graph, _ = _code_health().import_graph(REPO)
    return modules, graph


def test_the_package_has_no_import_cycle(graph):
    _, edges = graph
    assert _code_health().cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _code_health().cycles({'a': ['b'], 'b': ['c'], 'c': ['a'], 'd': ['a']}) == [['a', 'b', 'c']]


def test_the_quantization_core_imports_nothing_above_it(graph):
    modules, edges = graph
    higher = ('odm_basicsr.archs', 'odm_basicsr.models', 'odm_basicsr.losses', 'odm_basicsr.tools',
              'odm_basicsr.options', 'odm_basicsr.cli', 'odm_basicsr._compat', 'odm_basicsr.data')
    health = _code_health()
    for name, path in modules.items():
        if not name.startswith('odm_basicsr.quant'):
            continue
        for target, _, line in health.imports_of(name, path, modules):
            assert not target.startswith(higher), f'{name}:{line} imports {target}'
            assert target.split('.')[0] != 'basicsr', f'{name}:{line} imports {target}'


def test_no_command_imports_another_command(graph):
    _, edges = graph
    shared = ('odm_basicsr.tools.cli_io', 'odm_basicsr.tools.cli_text')  # the commands' I/O and their flags
    commands = {n for n in edges if n.startswith('odm_basicsr.tools.') and n not in shared}
    for name in commands:
        assert not set(edges[name]) & commands, f'{name} imports {set(edges[name]) & commands}'


def test_imports_inside_functions_only_guard_optional_dependencies_or_wait_for_the_compat_fixes():
    health = _code_health()
    local = health.local_imports(REPO)
    assert any(module == 'odm_basicsr.quant.export_integer' and target == 'onnxruntime' for module, target, _ in local)
    assert [(m, t, line) for m, t, line in local if not health.allowed_local_import(m, t)] == []
    assert not health.allowed_local_import('odm_basicsr.tools.infer_cli', 'torch')
    assert not health.allowed_local_import('odm_basicsr.options_check', 'basicsr.utils.registry')


def test_quant_config_defaults_and_every_problem_named_with_a_suggestion():
    config = QuantConfig()
    assert (config.w_bit, config.a_bit, config.weight_clip, config.scope, config.outer_bit) == (4, 4, 'max', 'body', None)
    with pytest.raises(QuantConfigError) as err:
        QuantConfig(w_bit=9, weight_clip='wc', weight_granularity='chanel', offsets='sift', scope='everything',
                    integer_zero_point='yes')
    problems = err.value.problems
    assert len(problems) == 6
    assert any(p.startswith('w_bit must be an integer bit-width from 2 to 8') for p in problems)
    assert any("'wc' is not one of max, percentile, wcc (did you mean 'wcc'?)" in p for p in problems)
    assert any("(did you mean 'channel'?)" in p for p in problems)
    assert any("(did you mean 'shift'?)" in p for p in problems)
    assert any(p.startswith('scope:') for p in problems) and any('integer_zero_point' in p for p in problems)
    assert QuantConfig.problems({'a_bit': 1, 'num_feat': 64}, 'network_g.') == [
        'network_g.a_bit must be an integer bit-width from 2 to 8, got 1.']
    with pytest.raises(Exception):
        config.w_bit = 2  # frozen


def test_quant_config_outer_layers_and_from_options():
    config = QuantConfig.from_options({'type': 'ODMEDSR', 'w_bit': 2, 'a_bit': 3, 'offsets': 'auto', 'scope': ['a.*'],
                                       'outer_bit': 8, 'num_feat': 8})
    assert config.scope == ('a.*', ) and config.as_dict()['scope'] == ['a.*']
    outer = config.for_outer_layers()
    assert (outer.w_bit, outer.a_bit, outer.offsets) == (8, 8, 'none')


def test_conversion_reads_the_config():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=2),
                        nn.Linear(4, 2))
    names = quantize_modules(net, ['*'], QuantConfig(w_bit=3, a_bit=5, weight_clip='wcc',
                                                     weight_granularity='channel', offsets='auto'))
    assert names == ['0', '2', '3']
    for layer in (net[0], net[2], net[3]):
        assert (layer.weight_quantizer.bits, layer.act_quantizer.bits) == (3, 5)
        assert layer.weight_quantizer.weight_clip == 'wcc' and layer.weight_quantizer.granularity == 'channel'
    assert net[0].offset is not None  # an ungrouped conv may get an offset
    assert net[2].offset is None and net[3].offset is None  # a grouped conv and a linear never do


def test_the_odm_arch_list_comes_from_the_registry():
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.utils.registry import ARCH_REGISTRY

    from odm_basicsr.archs.quant_util import QuantizedArchMixin
    from odm_basicsr.options_check import odm_archs
    assert {'ODMEDSR', 'ODMMSRResNet', 'ODMRDN', 'ODMSwinIR', 'ODMQuant'} <= set(odm_archs())
    assert 'EDSR' not in odm_archs() and 'RDN' not in odm_archs()
    if 'HouseTestQuantEDSR' not in ARCH_REGISTRY:
        ARCH_REGISTRY.register(type('HouseTestQuantEDSR', (QuantizedArchMixin, EDSR), {'fp_arch': 'EDSR'}))
    assert 'HouseTestQuantEDSR' in odm_archs()
