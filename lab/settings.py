"""What every setting may be, on the command line and in a checkpoint alike, and what the lab
takes on: past these limits a pure-Python run needs days or gigabytes."""

import math
from dataclasses import dataclass

from variants import MLP

# (int, low, high) inclusive, (float, low, high) strictly between, bool, or the words allowed
LIMITS = {'n_embd': (int, 1, 1024), 'n_head': (int, 1, 1024), 'n_layer': (int, 1, 64),
          'block_size': (int, 2, 256), 'mlp_hidden': (int, 1, 65536),
          'init_std': (float, 0, 10), 't_min': (float, 0, 1), 'steps': (int, 1, 10**9),
          'batch_size': (int, 1, 10**6), 'lr': (float, 0, 1e300), 'warmup': (int, 0, 10**9),
          'beta1': (float, 0, 1), 'beta2': (float, 0, 1), 'adam_eps': (float, 0, 1),
          'seed': (int, -2**63, 2**63), 'val_size': (int, 0, 10**6),
          'val_every': (int, 1, 10**9), 'val_names': (int, 0, 10**6),
          # the kinds of model (variants.choose)
          'model': ('diffusion', 'gpt'), 'denoiser': ('transformer', 'mlp'), 'padding': bool,
          'text': bool}
SAMPLING_LIMITS = {'steps': (int, 1, 10**6), 'temp_start': (float, 0, 100),
                   'temp_end': (float, 0, 100), 'temperature': (float, 0, 100),
                   'remask': ('confidence', 'random'), 'order': ('any', 'left-to-right'),
                   'length': ('first', 'along'), 'loop_passes': (int, 0, 10**4),
                   'loop_at': (int, 0, 255), 'loop_remask': (int, 1, 255),
                   'loop_temperature': (float, 0, 100)}
# A model's weights; one name's attention scores, n_layer · n_head · block_size², ~450 bytes
# each of a training step's graph (2 million: 0.9 GB); a weight a checkpoint may hold.
MAX_PARAMS, MAX_SCORES, MAX_WEIGHT = 200_000, 2_000_000, 1e6
# Running text: windows of 32 characters by default (most of what a small model can learn
# about the next character lies within a few words, and a step's cost grows with the window);
# the last tenth of the file is held out.
TEXT_BLOCK, TEXT_HELD_OUT = 32, 0.1


@dataclass
class Validation:
    """The lab's own settings of a run: what it holds out, and how often it measures it."""
    val_size: int = 1000    # names held out of training, to measure what was not memorised
    val_every: int = 500    # steps between validation estimates on the progress line
    val_names: int = 200    # held-out names per estimate (eval uses them all)


def fits(value, rule):
    """Whether a value obeys a rule of LIMITS."""
    if rule is bool or isinstance(rule[0], str):
        return type(value) is bool if rule is bool else value in rule
    kind, low, high = rule
    if kind is int:
        return type(value) is int and low <= value <= high
    return type(value) in (int, float) and math.isfinite(value) and low < value < high


def numbers(xs, most):
    """Whether xs are all finite numbers of at most `most` in size."""
    return all(type(x) in (int, float) and -most <= x <= most for x in xs)


def too_large(kind, cfg, vocab_size):
    """What puts a model of this class past the lab's limits, or None."""
    if sum(rows * columns for rows, columns in kind.shapes(cfg, vocab_size).values()) > \
            MAX_PARAMS:
        return f'more than {MAX_PARAMS:,} parameters'
    if not issubclass(kind, MLP) and cfg.n_layer * cfg.n_head * cfg.block_size**2 > MAX_SCORES:
        return f'more than {MAX_SCORES:,} attention scores a name (layers x heads x block²)'
    return None
