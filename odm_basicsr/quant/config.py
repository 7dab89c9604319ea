"""``QuantConfig``: every knob of a quantized network in one frozen object, with its default, its allowed values and
its error text. The archs build it from their constructor arguments (which mirror ``network_g`` in the option file),
conversion and the layers read it, and the option check asks it for errors instead of repeating the rules.

Adding a knob: a field here (default, check), the layer that uses it, and a test. Nothing else.
"""
import difflib
from dataclasses import asdict, dataclass, fields, replace

MIN_BITS, MAX_BITS = 2, 8
WEIGHT_CLIP_MODES = ('max', 'percentile', 'wcc')
WEIGHT_GRANULARITIES = ('layer', 'channel')
OFFSET_MODES = ('none', 'shift', 'scale', 'auto')
SCOPES = ('body', 'all')


def closest_match(key, choices):
    """The choice closest to ``key``, case ignored, or None if none is close."""
    lowered = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(key).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def did_you_mean(key, choices):
    """' (did you mean 'x'?)' for the choice closest to ``key``, case ignored; '' if none is close."""
    close = closest_match(key, choices)
    return f' (did you mean {close!r}?)' if close else ''


def bits_problem(key, value):
    """The error text for a bit-width ``value`` under ``key`` (e.g. ``network_g.w_bit``), or None if it is valid."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_BITS <= value <= MAX_BITS:
        return f'{key} must be an integer bit-width from {MIN_BITS} to {MAX_BITS}, got {value!r}.'
    return None


def check_bits(key, value):
    """Validate a bit-width option (ValueError naming ``key``); returns it."""
    problem = bits_problem(key, value)
    if problem:
        raise ValueError(problem)
    return value


def _choice_problem(key, value, choices):
    if value in choices:
        return None
    return f'{key}: {value!r} is not one of {", ".join(map(str, choices))}{did_you_mean(str(value), choices)}.'


def _scope_problem(key, value):
    if isinstance(value, str):
        return _choice_problem(key, value, SCOPES)
    if isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value):
        return None
    return f'{key}: must be body, all or a list of layer-name patterns, got {value!r}.'


def _flag_problem(key, value):
    return None if isinstance(value, bool) else f'{key}: must be true or false, got {value!r}.'


class QuantConfigError(ValueError):
    """One or more invalid quantization settings; ``problems`` lists each with its key."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(' '.join(self.problems))


@dataclass(frozen=True)
class QuantConfig:
    """How a network is quantized.

    Attributes:
        w_bit, a_bit (int): weight / activation bit-width of the quantized layers, 2 to 8.
        weight_clip (str): 'max' (max|W|), 'percentile' (P99|W|) or 'wcc' (ODM v2's learned layer-wise correction).
        scope (str | tuple[str]): 'body' (the paper's: the convs of the residual / dense blocks), 'all', or fnmatch
            patterns of layer names.
        outer_bit (int | None): with scope 'all' or patterns, the bit-width of the layers outside the body.
        offsets (str): 'none' | 'shift' | 'scale' | 'auto': which distribution offsets (ODM v1) calibration may enable.
        weight_granularity (str): 'layer' or 'channel': one weight clip per layer or per output channel.
        integer_zero_point (bool): activation grids on integer zero points, as integer runtimes compute.
    """
    w_bit: int = 4
    a_bit: int = 4
    weight_clip: str = 'max'
    scope: object = 'body'
    outer_bit: object = None
    offsets: str = 'none'
    weight_granularity: str = 'layer'
    integer_zero_point: bool = False

    def __post_init__(self):
        if isinstance(self.scope, list):
            object.__setattr__(self, 'scope', tuple(self.scope))
        problems = self.problems(asdict(self))
        if problems:
            raise QuantConfigError(problems)

    @classmethod
    def keys(cls):
        """The option names, in order (each is a ``network_g`` key of the ODM archs)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def problems(cls, values, prefix=''):
        """The error texts for the knobs given in ``values`` (a dict, e.g. ``network_g``), each naming its key as
        ``prefix + key``; keys that are not knobs are ignored."""
        checks = {
            'w_bit': bits_problem,
            'a_bit': bits_problem,
            'weight_clip': lambda k, v: _choice_problem(k, v, WEIGHT_CLIP_MODES),
            'weight_granularity': lambda k, v: _choice_problem(k, v, WEIGHT_GRANULARITIES),
            'offsets': lambda k, v: _choice_problem(k, v, OFFSET_MODES),
            'scope': _scope_problem,
            'outer_bit': lambda k, v: None if v is None else bits_problem(k, v),
            'integer_zero_point': _flag_problem,
        }
        found = []
        for key, check in checks.items():
            if key in values:
                problem = check(prefix + key, values[key])
                if problem:
                    found.append(problem)
        return found

    @classmethod
    def from_options(cls, network_opt):
        """The config of a ``network_g`` block: its knobs, defaults for the rest (other keys are ignored)."""
        return cls(**{k: network_opt[k] for k in cls.keys() if k in network_opt})

    @classmethod
    def from_arguments(cls, owner, arguments):
        """The config of an arch's ``**quantization`` arguments: unknown keys are a TypeError naming ``owner`` and
        the nearest knob, as a misspelt keyword argument would be."""
        unknown = [k for k in arguments if k not in cls.keys()]
        if unknown:
            raise TypeError(f'{owner}() got an unexpected keyword argument {unknown[0]!r}'
                            f'{did_you_mean(unknown[0], cls.keys())}; its quantization keys are {", ".join(cls.keys())}.')
        return cls(**arguments)

    def for_outer_layers(self):
        """The config of the layers outside the body (``outer_bit``): that bit-width, no offsets."""
        return replace(self, w_bit=self.outer_bit, a_bit=self.outer_bit, offsets='none')

    def as_dict(self):
        """A plain dict (scope as a list), as stored in ``quant_config`` and logged."""
        values = asdict(self)
        if isinstance(values['scope'], tuple):
            values['scope'] = list(values['scope'])
        return values
