"""The quantization core: quantizers, quantized layers, conversion, calibration, regularizers, gradient
cooperation, cost accounting and checked checkpoint loading. Imports nothing from BasicSR."""
from .config import (MAX_BITS, MIN_BITS, OFFSET_MODES, SCOPES, WEIGHT_CLIP_MODES, WEIGHT_GRANULARITIES, QuantConfig,
                     QuantConfigError, check_bits, did_you_mean)
from .calibrate import DEFAULT_RANGE_METHOD, RANGE_METHODS, calibrate, offset_scores, select_offsets
from .checkpoint import (EDSR_PYTORCH_CONVERTERS, QUANTIZATION_KEY, CheckedLoadMixin, CheckpointMismatchError,
                         check_state_dict, convert_edsr_pytorch_edsr, convert_edsr_pytorch_rdn, quantization_record,
                         record_mismatches)
from .convert import (ScopeError, UnusedQuantizedLayerError, activation_points, is_quantizer_param,
                      layer_names, quantize_modules, quantize_network, quantized_layers, refresh_quantizer_state,
                      set_integer_kernel_eval, set_integer_zero_point, set_quantization, unused_in_eval)
from .cooperation import COOPERATION_MODES, combine_flat, combine_gradients, cosine_similarity
from .cost import cost_report, format_cost_report
from .layers import ChannelOffset, MatMul, QuantConv2d, QuantLinear, QuantOperand
from .quantizer import (ActQuantizer, UncalibratedQuantizerError, WeightQuantizer, channel_percentile, fake_quantize,
                        integer_grid, percentile, round_ste, skip_range_gradients)
from .regularizers import REGULARIZERS, VARIANCE_STATS, mismatch_loss, variance_loss

__all__ = [
    'QuantConfig', 'QuantConfigError', 'did_you_mean',
    'ActQuantizer', 'WeightQuantizer', 'QuantConv2d', 'QuantLinear', 'QuantOperand', 'MatMul', 'ChannelOffset',
    'fake_quantize', 'skip_range_gradients', 'round_ste', 'activation_points', 'integer_grid',
    'percentile', 'check_bits', 'quantize_modules', 'quantize_network', 'quantized_layers', 'set_quantization',
    'refresh_quantizer_state', 'set_integer_zero_point', 'set_integer_kernel_eval', 'ScopeError', 'layer_names',
    'UncalibratedQuantizerError', 'channel_percentile', 'unused_in_eval', 'UnusedQuantizedLayerError',
    'WEIGHT_GRANULARITIES', 'RANGE_METHODS', 'DEFAULT_RANGE_METHOD',
    'is_quantizer_param', 'calibrate', 'offset_scores', 'select_offsets', 'cost_report', 'format_cost_report',
    'variance_loss', 'mismatch_loss', 'combine_gradients', 'combine_flat', 'cosine_similarity', 'check_state_dict',
    'CheckedLoadMixin', 'CheckpointMismatchError', 'convert_edsr_pytorch_edsr', 'convert_edsr_pytorch_rdn',
    'EDSR_PYTORCH_CONVERTERS', 'QUANTIZATION_KEY', 'quantization_record', 'record_mismatches', 'SCOPES',
    'OFFSET_MODES', 'WEIGHT_CLIP_MODES', 'COOPERATION_MODES', 'REGULARIZERS',
    'VARIANCE_STATS', 'MIN_BITS', 'MAX_BITS'
]
