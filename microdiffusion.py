"""microdiffusion: masked (absorbing-state) text diffusion, in pure Python.

It learns first names by erasing letters and predicting them back, and it invents new names
by starting from a blank and filling it in, a few letters at a time.

    forward process (training): erase each position with probability t

        t = 0     e m m a . . . . . . . . . . . .     "." is PAD: the name has ended
        t = 0.3   e _ m a . . _ . . . . . _ . . .     "_" is MASK: an erased position
        t = 0.7   _ _ m _ . _ _ _ . _ . _ _ _ . _
        t = 1     _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _

    reverse process (sampling): predict every MASK, keep the surest, repeat

        t = 1     _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _
        t = 0.7   _ _ _ _ _ . _ . . . _ . . . . .
        t = 0.3   m _ r _ a . . . . . . . . . . .
        t = 0     m a r i a . . . . . . . . . . .     -> "maria"

The denoiser is a tiny bidirectional transformer (every position attends to every other),
built on value.py's scalar autograd. It meets the diffusion code at one interface, tokens in
and logits out at the positions asked about, so it can be swapped (try --denoiser mlp).

    python microdiffusion.py            train on names.txt, save model.json, print 20 names
    python microdiffusion.py --help     train, sample, eval, forward, bench
"""

import argparse
import gc
import hashlib
import json
import math
import multiprocessing
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from operator import add

from value import (Tape, Value, dot, logsumexp, matmul, matmul_relu, relu, softmax_matmul,
                   topological_order, vsum)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

@dataclass
class Config:
    # --- the denoiser (a checkpoint records these: they fix the shape of the parameters) ---
    n_embd: int = 16        # numbers per position: room for a letter, its place, its context
    n_head: int = 4         # attention heads, each n_embd // n_head = 4 numbers wide
    n_layer: int = 2        # blocks: one gathers clues from the visible letters, two combine them
    block_size: int = 16    # positions per name: the longest in names.txt (15) and one PAD
    denoiser: str = 'transformer'  # or 'mlp': the diffusion code around it is the same
    mlp_hidden: int = 8     # hidden width of the mlp denoiser: its 7,168 weights are about
    #                         the transformer's 6,848, for a fair comparison
    init_std: float = 0.08  # weights start N(0, 0.08): small, so first guesses are near uniform
    # --- the forward process ---
    t_min: float = 0.2      # lowest noise level trained on: below it most names lose 0-2 letters
    #                         and teach little (MDLM trains all of (0, 1]; at 7K weights, focus)
    # --- training ---
    steps: int = 2500       # optimiser steps
    batch_size: int = 4     # names per step, their gradients averaged: 2 per process on 2 CPUs
    lr: float = 0.014       # Adam's peak learning rate; it decays linearly to 0 at the last step
    warmup: int = 0         # steps of linear warm-up to the peak
    beta1: float = 0.85     # Adam's gradient average forgets in ~1/(1-0.85) = 7 steps
    beta2: float = 0.95     # and its squared-gradient average in ~20 steps
    adam_eps: float = 1e-8  # keeps Adam's step finite where a gradient is ~0
    seed: int = 42          # every random choice (init, batches, noise) follows from it
    val_size: int = 1000    # names held out of training, to measure what was not memorised
    val_every: int = 500    # steps between validation estimates on the progress line
    val_names: int = 200    # held-out names per estimate (eval uses them all)


MODEL_FIELDS = ('n_embd', 'n_head', 'n_layer', 'block_size', 'denoiser', 'mlp_hidden')


# ---------------------------------------------------------------------------------------------
# Data and tokenizer
# ---------------------------------------------------------------------------------------------

class UserError(Exception):
    """Something the user can fix (a path, a file, a flag): reported in one line, no traceback."""


def load_names(path, block_size):
    """The names in a UTF-8 text file, one per line, stripped; blank lines are skipped."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f'{path}: no such file; give a text file with one name per line') from None
    except IsADirectoryError:
        raise UserError(f'{path}: is a folder; give a text file with one name per line') from None
    except OSError as e:
        raise UserError(f'{path}: cannot be read ({e.strerror})') from None
    names = []
    for number, line in enumerate(raw.split(b'\n'), start=1):
        try:
            text = line.decode('utf-8-sig' if number == 1 else 'utf-8')
        except UnicodeDecodeError:
            raise UserError(f'{path}, line {number}: is not UTF-8 text; save the file as '
                            'UTF-8') from None
        name = text.strip()
        if len(name) > block_size:
            shown = name if len(name) <= 30 else name[:27] + '...'
            raise UserError(f'{path}, line {number}: {shown!r} has {len(name)} characters, more '
                            f'than the {block_size} a name can have; shorten or remove it')
        if name:
            names.append(name)
    if not names:
        raise UserError(f'{path}: has no names (it is empty or only blank lines)')
    return names


def split_names(names, val_size):
    """(train, validation): a held-out set that depends only on the set of names, not their order.

    Up to val_size distinct names (at most a tenth of them) are drawn with a fixed seed; every
    copy of a held-out name leaves the training set, so validation measures unseen names.
    """
    distinct = sorted(set(names))
    held_out = random.Random(0).sample(distinct, min(val_size, len(distinct) // 10))
    held = set(held_out)
    return [n for n in names if n not in held], held_out


def fingerprint(names):
    """A short hash of the training names, so --resume can refuse different data."""
    return hashlib.sha256('\n'.join(names).encode('utf-8')).hexdigest()[:16]


class Tokenizer:
    """Characters <-> token ids: the data's sorted characters, then MASK, then PAD."""

    def __init__(self, chars):
        self.chars = list(chars)        # token i < len(chars) is the character chars[i]
        self.MASK = len(self.chars)     # an erased position: read by the model, never predicted
        self.PAD = len(self.chars) + 1  # "the name has ended": fills a name out to block_size
        self.vocab_size = len(self.chars) + 2
        self.ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_names(cls, names):
        return cls(sorted(set(''.join(names))))

    def encode(self, name, block_size):
        return [self.ids[c] for c in name] + [self.PAD] * (block_size - len(name))

    def decode(self, tokens):
        """The name a sequence spells: its characters, PAD dropped."""
        if self.MASK in tokens:
            raise ValueError('decode: the sequence still has MASK in it')
        return ''.join([self.chars[t] for t in tokens if t != self.PAD])

    def show(self, tokens):
        """A sequence as text, MASK as '_' and PAD as '.': for traces."""
        marks = {self.MASK: '_', self.PAD: '.'}
        return ''.join([marks.get(t) or self.chars[t] for t in tokens])


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

def transformer_shapes(cfg, vocab_size):
    """The transformer's weight matrices, name -> (rows, columns), stored [out][in], no biases.

    wte is ONE parameter with two jobs (weight tying): row v embeds token v at the input, and
    the logit of token v is the final vector dotted with that same row.
    """
    shapes = {'wte': (vocab_size, cfg.n_embd), 'wpe': (cfg.block_size, cfg.n_embd)}
    for layer in range(cfg.n_layer):
        for name in ('attn_wq', 'attn_wk', 'attn_wv', 'attn_wo'):
            shapes[f'layer{layer}.{name}'] = (cfg.n_embd, cfg.n_embd)
        shapes[f'layer{layer}.mlp_fc1'] = (4 * cfg.n_embd, cfg.n_embd)
        shapes[f'layer{layer}.mlp_fc2'] = (cfg.n_embd, 4 * cfg.n_embd)
    return shapes


def mlp_shapes(cfg, vocab_size):
    """The comparison denoiser's: one-hot of every position -> hidden -> every position's logits."""
    width = cfg.block_size * vocab_size
    return {'mlp_in': (cfg.mlp_hidden, width), 'mlp_out': (width, cfg.mlp_hidden)}


def init_params(shapes, std, rng):
    """Every matrix filled with Value leaves drawn from N(0, std), in the order of `shapes`."""
    params = {}
    for name, (n_out, n_in) in shapes.items():
        params[name] = [[Value(rng.gauss(0.0, std)) for _ in range(n_in)] for _ in range(n_out)]
    return params


def flatten(params):
    """Every parameter once, in a fixed order: what the optimiser updates."""
    values = []
    for name in sorted(params):
        for row in params[name]:
            values += row
    return values


def as_floats(params):
    """A copy of the parameters as plain floats: the same model, run with no graph at all."""
    floats = {}
    for name, rows in params.items():
        floats[name] = [[p.data for p in row] for row in rows]
    return floats


def as_values(floats):
    """Parameters as Value leaves again, ready to train."""
    params = {}
    for name, rows in floats.items():
        params[name] = [[Value(x) for x in row] for row in rows]
    return params


# ---------------------------------------------------------------------------------------------
# The denoiser: tokens in, logits out at the positions asked about
# ---------------------------------------------------------------------------------------------
# Every function here works on Values (training: it builds the graph backward() needs) and on
# plain floats (sampling and evaluation: no graph, several times faster). A vector is a list of
# n_embd numbers; `xs` holds one vector per position.

def add_vectors(a, b):
    return [x + y for x, y in zip(a, b)]


def rmsnorm(x):
    """x * (mean(x²) + 1e-5) ** -0.5: every vector leaves with root-mean-square ~1 (no gain)."""
    scale = (dot(x, x) / len(x) + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def attention(params, prefix, xs, queries, n_head):
    """x + multi-head self-attention of rmsnorm(x), for each query position. Bidirectional:
    each query reads ALL positions."""
    normed = [rmsnorm(x) for x in xs]
    head_dim = len(xs[0]) // n_head
    scale = 1 / math.sqrt(head_dim)
    qs = matmul(params[prefix + 'attn_wq'], [normed[i] for i in queries])
    ks = matmul(params[prefix + 'attn_wk'], normed)
    vs = matmul(params[prefix + 'attn_wv'], normed)
    heads = [[] for _ in queries]  # per query, its heads' outputs side by side
    for h in range(n_head):
        dims = slice(h * head_dim, (h + 1) * head_dim)
        keys = [k[dims] for k in ks]                        # this head's key at every position
        value_columns = [list(c) for c in zip(*[v[dims] for v in vs])]
        scores = matmul(keys, [q[dims] for q in qs])        # per query, one per position
        # softmax(scores / sqrt(head_dim)) · values, each output one node (see value.py)
        for out, mixed in zip(heads, softmax_matmul(value_columns, scores, scale)):
            out += mixed
    return matmul(params[prefix + 'attn_wo'], heads, [xs[i] for i in queries])


def mlp(params, prefix, xs):
    """x + MLP of rmsnorm(x), per position: n_embd -> 4·n_embd -> ReLU -> n_embd.

    ReLU zeroes the negative hidden units, and a zero adds nothing to fc2's output and passes
    no gradient back. So matmul_relu makes no nodes for them, and fc2 reads only the positive
    units, as they are (ReLU leaves them unchanged): the same numbers with fewer nodes.
    """
    fc2 = params[prefix + 'mlp_fc2']
    outs = []
    hiddens = matmul_relu(params[prefix + 'mlp_fc1'], [rmsnorm(x) for x in xs])
    for x, (alive, live) in zip(xs, hiddens):
        live_fc2 = [[row[j] for j in alive] for row in fc2]
        outs.append(matmul(live_fc2, [live], [x])[0])
    return outs


def transformer(params, cfg, tokens, positions):
    """The denoiser: a list of token ids in, one list of logits (one per token id) out for each
    position in `positions`."""
    wte, wpe = params['wte'], params['wpe']
    xs = [rmsnorm(add_vectors(wte[tok], wpe[i])) for i, tok in enumerate(tokens)]
    for layer in range(cfg.n_layer):
        prefix = f'layer{layer}.'
        # The last layer's outputs only feed logits, so it computes them only where asked.
        queries = positions if layer == cfg.n_layer - 1 else range(len(tokens))
        xs = attention(params, prefix, xs, queries, cfg.n_head)  # each block adds to its input
        xs = mlp(params, prefix, xs)
    return matmul(wte, xs)  # weight tying: the logit of token v is x · wte[v]


def mlp_denoiser(params, cfg, tokens, positions):
    """The comparison denoiser: one-hot tokens of all positions -> ReLU hidden layer -> logits."""
    vocab_size = len(params['mlp_in'][0]) // len(tokens)
    # W · onehot just adds up the columns of the tokens present, one per position.
    active = [i * vocab_size + tok for i, tok in enumerate(tokens)]
    hidden = [relu(vsum([row[j] for j in active])) for row in params['mlp_in']]
    out = params['mlp_out']
    return [matmul(out[i * vocab_size:(i + 1) * vocab_size], [hidden])[0] for i in positions]


DENOISERS = {'transformer': (transformer_shapes, transformer), 'mlp': (mlp_shapes, mlp_denoiser)}


# ---------------------------------------------------------------------------------------------
# Diffusion, forward: the noise and the loss
# ---------------------------------------------------------------------------------------------

def noise_levels(rng, t_min, n):
    """n noise levels t, each log-uniform on [t_min, 1]: as likely in [0.2, 0.45] as in [0.45, 1].

    The continuous-time ELBO adds up, over t in (0, 1], the erased tokens' -log p weighted by
    1/t (MDLM); drawing t with density ∝ 1/t is importance sampling of that weight, so low
    noise, where a few erased letters must be read from many clues, gets its share of training
    without a weight in the loss (see diffusion_loss).
    The n levels of a batch are drawn together, evenly spread over the range from one random
    offset (MDLM's low-discrepancy sampler), so every batch mixes light and heavy noise: at
    equal names seen, validation NELBO came out 0.2 nats lower, in two pairs of runs.
    """
    offset = rng.random()
    spread = [(i + offset) / n for i in range(n)]
    rng.shuffle(spread)
    return [math.exp(math.log(t_min) * (1 - u)) for u in spread]


def mask(tokens, t, mask_id, rng):
    """The forward process at noise level t: each position, PAD included, becomes MASK
    independently with probability t."""
    return [mask_id if rng.random() < t else tok for tok in tokens]


def token_nll(logits, target, mask_id):
    """-log p(target) under a softmax over every token but MASK: the model can never predict
    MASK (MDLM's SUBS parameterisation), so no probability is wasted on it."""
    return logsumexp(logits[:mask_id] + logits[mask_id + 1:]) - logits[target]


def diffusion_loss(denoise, params, cfg, tokens, t, mask_id, rng):
    """One name's loss at noise level t: erase, predict, and add up -log p of the erased
    tokens. PAD is a target like any letter: predicting it is how the model learns length.

    With t drawn log-uniformly (noise_levels), log(1/t_min) times this SUM estimates the
    NELBO's share from noise levels t_min..1 without bias (the 1/t weight is in the draw): the
    loss is in eval's units, nats per name, a little under the full NELBO. An average over the
    erased positions instead would weigh a name by 1/t once more, lightly erased names up.
    """
    erased = []
    while not erased:  # nothing erased, nothing to learn: draw again
        noisy = mask(tokens, t, mask_id, rng)
        erased = [i for i, tok in enumerate(noisy) if tok == mask_id]
    logits = denoise(params, cfg, noisy, erased)
    nlls = [token_nll(lg, tokens[i], mask_id) for i, lg in zip(erased, logits)]
    return vsum(nlls) * math.log(1 / cfg.t_min)


# ---------------------------------------------------------------------------------------------
# Diffusion, reverse: the sampler
# ---------------------------------------------------------------------------------------------

def noise_at(i, steps):
    """The cosine schedule: t_i = cos(π/2 · (1 - i/steps)), 1 at i = steps, 0 at i = 0. It
    decides few positions while little is known and speeds up as letters fill in."""
    return math.cos(math.pi / 2 * (1 - i / steps))


def masked_counts(n0, steps):
    """Entry i: how many of n0 positions are still masked when step i starts, round(n0 · t_i)."""
    return [round(n0 * noise_at(i, steps)) for i in range(steps + 1)]


def draw(logits, candidates, temperature, rng):
    """A token drawn from softmax(logits / temperature) over the candidates, and a confidence.

    Both come from one Gumbel-max draw: token = argmax_c (log p_c + T·g_c), with p the model's
    probabilities (at temperature 1) and g_c independent standard Gumbel noise; the confidence
    is the winning score. As T falls to 0 it tends to log p(token), plain confidence (LLaDA).
    At T = 1 it is pure noise, whatever p is, so re-masking the least confident is re-masking
    at random: the true reverse process. In between it is MaskGIT's noisy confidence.
    """
    scores = [logits[c] for c in candidates]
    log_total = logsumexp(scores)
    perturbed = [s - log_total + temperature * gumbel(rng) for s in scores]
    best = max(range(len(candidates)), key=perturbed.__getitem__)
    return candidates[best], perturbed[best]


def gumbel(rng):
    """Standard Gumbel noise, -log(-log u) for u uniform in (0, 1)."""
    u = rng.random()
    while u == 0.0:
        u = rng.random()
    return -math.log(-math.log(u))


def reverse_step(denoise, params, cfg, seq, candidates, keep_masked, temperature, remask,
                 mask_id, rng):
    """One reverse step: predict every MASK, then put MASK back on `keep_masked` of them.

    remask='confidence' re-masks the least sure predictions (MaskGIT, LLaDA): a heuristic that
    fills in the easy positions first. remask='random' re-masks a uniformly random subset: the
    plain reverse process of absorbing diffusion, which the theory gives.
    """
    masked = [i for i, tok in enumerate(seq) if tok == mask_id]
    logits = denoise(params, cfg, seq, masked)
    guesses = [draw(lg, candidates[i], temperature, rng) for i, lg in zip(masked, logits)]
    if remask == 'confidence':
        by_confidence = sorted(range(len(masked)), key=lambda j: guesses[j][1])
        remasked = set(by_confidence[:keep_masked])
    else:
        remasked = set(rng.sample(range(len(masked)), keep_masked))
    new = list(seq)
    for j, i in enumerate(masked):
        if j not in remasked:
            new[i] = guesses[j][0]
    return new


@dataclass
class Sampling:
    """How to run the reverse process (the defaults: every position free, 64 steps)."""
    steps: int = 64               # reverse steps along the cosine schedule (>= 16 decide)
    temp_start: float = 1.0       # temperature at t = 1: while nothing is known, the model's
    #                               own odds, and re-masking at random (see draw)
    temp_end: float = 0.8         # at t = 0, a little cooler: surer letters, surer picks.
    #                               Measured over 1,000 names: colder ends make names short
    #                               and common
    temperature: float = 1.0      # scales both: 1 keeps temp_start -> temp_end
    remask: str = 'confidence'    # which guesses go back under MASK: 'confidence' or 'random'
    template: list = None         # starting tokens (MASK where free); None: all MASK
    candidates: list = None       # per position, the token ids it may become; None: all but MASK


def sample_tokens(denoise, params, cfg, tok, rng, how, trace=None):
    """The reverse process: from MASK everywhere (or a template's blanks) to a finished name.

    After step i exactly masked_counts(n0, steps)[i - 1] positions are still masked. A step
    that would leave the count unchanged decides nothing (it would re-mask every guess), so it
    is skipped: 16 forward passes instead of 64, and the same distribution of names.
    The temperature follows the noise: T = temperature · (T_end + (T_start - T_end) · t).
    trace, if a list, receives (step, t, T, tokens) after every step that changed something.
    """
    seq = list(how.template) if how.template else [tok.MASK] * cfg.block_size
    candidates = how.candidates or [list(range(len(tok.chars))) + [tok.PAD]] * cfg.block_size
    counts = masked_counts(seq.count(tok.MASK), how.steps)
    for i in range(how.steps, 0, -1):
        if counts[i - 1] == counts[i]:
            continue
        t = noise_at(i, how.steps)
        T = how.temperature * (how.temp_end + (how.temp_start - how.temp_end) * t)
        seq = reverse_step(denoise, params, cfg, seq, candidates, counts[i - 1], T, how.remask,
                           tok.MASK, rng)
        if trace is not None:
            trace.append((i, t, T, seq))
    return seq


def parse_pattern(pattern, tok, block_size):
    """A pattern -> (template, candidates) for sample_tokens.

    Letters are fixed, '_' is one letter to fill in, and a final '*' allows any continuation:
    more letters or the end. 'm_r__' gives five-letter names m?r??, 'ka*' names starting "ka".
    """
    open_end = pattern.endswith('*')
    body = pattern[:-1] if open_end else pattern
    if '*' in body:
        raise UserError(f"pattern {pattern!r}: '*' may only come last")
    if not body and not open_end:
        raise UserError("the pattern is empty; use '*' for any name")
    if len(body) > block_size:
        raise UserError(f'pattern {pattern!r} has {len(body)} positions; '
                        f'names have at most {block_size}')
    unknown = sorted({c for c in body if c != '_' and c not in tok.ids})
    if unknown:
        raise UserError(f'pattern {pattern!r}: {"".join(unknown)!r} not in the vocabulary '
                        f'{"".join(tok.chars)!r}')
    letters = list(range(len(tok.chars)))
    template = [tok.MASK if c == '_' else tok.ids[c] for c in body]
    candidates = [letters] * len(body)
    rest = block_size - len(body)
    template += [tok.MASK if open_end else tok.PAD] * rest
    candidates += [letters + [tok.PAD]] * rest
    return template, candidates


# ---------------------------------------------------------------------------------------------
# Diffusion, measured: the ELBO
# ---------------------------------------------------------------------------------------------

def nelbo(denoise, params, cfg, tokens, mask_id, rng):
    """An unbiased estimate of one name's negative ELBO, an upper bound on -log p(name), in nats.

    For absorbing diffusion over L positions (MDLM, RADD) the continuous-time bound is exactly

        NELBO(x) = Σ_{k=1..L} 1/k · E_M [ Σ_{i∈M} -log p(x_i | x with the positions M masked) ]

    with M a uniformly random set of k positions. The first k positions of one random order
    are such a set, for every k at once: L forward passes per estimate.
    """
    order = rng.sample(range(len(tokens)), len(tokens))
    total = 0.0
    for k in range(1, len(tokens) + 1):
        erased = sorted(order[:k])
        noisy = list(tokens)
        for i in erased:
            noisy[i] = mask_id
        logits = denoise(params, cfg, noisy, erased)
        total += sum([token_nll(lg, tokens[i], mask_id) for i, lg in zip(erased, logits)]) / k
    return total


def nelbo_one_pass(denoise, params, cfg, tokens, mask_id, rng):
    """A cheaper unbiased NELBO estimate, one forward pass: k uniform in 1..L, then
    L/k · Σ_{i∈M} -log p(x_i | x, M masked) for one random k-subset M. Noisier per name; the
    progress line averages it over many names."""
    size = len(tokens)
    k = rng.randint(1, size)
    erased = sorted(rng.sample(range(size), k))
    noisy = [mask_id if i in erased else t for i, t in enumerate(tokens)]
    logits = denoise(params, cfg, noisy, erased)
    return size / k * sum([token_nll(lg, tokens[i], mask_id) for i, lg in zip(erased, logits)])


# ---------------------------------------------------------------------------------------------
# The optimiser
# ---------------------------------------------------------------------------------------------

class Adam:
    """Adam (Kingma & Ba, 2015): each parameter's step is its gradient's running average (m)
    over the root of its squared gradient's running average (v), both bias-corrected.

    It keeps one m and one v per distinct parameter: the tied wte is in the list once, so it
    gets one pair of moments and one update per step.
    """

    def __init__(self, values, cfg):
        self.values = values
        self.beta1, self.beta2, self.eps = cfg.beta1, cfg.beta2, cfg.adam_eps
        self.m = [0.0] * len(values)
        self.v = [0.0] * len(values)
        self.t = 0  # steps taken, for the bias correction

    def step(self, grads, lr):
        b1, b2, eps, sqrt = self.beta1, self.beta2, self.eps, math.sqrt  # locals: 25% faster
        c1, c2 = 1 - b1, 1 - b2
        self.t += 1
        self.m = [b1 * m + c1 * g for m, g in zip(self.m, grads)]
        self.v = [b2 * v + c2 * g * g for v, g in zip(self.v, grads)]
        # lr · m̂ / (sqrt(v̂) + eps), with m̂ = m / (1 - b1^t) and v̂ = v / (1 - b2^t)
        lr_m = lr / (1 - b1 ** self.t)
        root_v = sqrt(1 / (1 - b2 ** self.t))
        for p, m, v in zip(self.values, self.m, self.v):
            p.data -= lr_m * m / (sqrt(v) * root_v + eps)


def learning_rate(cfg, step):
    """Linear warm-up to cfg.lr over cfg.warmup steps, then linear decay to 0 at the end."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * (1 - (step - cfg.warmup) / (cfg.steps - cfg.warmup))


# ---------------------------------------------------------------------------------------------
# Sharing work between processes
# ---------------------------------------------------------------------------------------------

class Workers:
    """Maps a function over jobs, in order, in n processes (n = 1: in this one, no pool).

    Every job carries its own inputs and random seed, so results never depend on n.
    """

    def __init__(self, n):
        self.n = n
        self.pool = None

    def __enter__(self):
        if self.n > 1:
            self.pool = multiprocessing.Pool(self.n, initializer=_start_worker)
        return self

    def __exit__(self, *exc):
        if self.pool:
            self.pool.terminate()
            self.pool.join()

    def map(self, fn, jobs):
        return self.pool.imap(fn, jobs) if self.pool else map(fn, jobs)


def _start_worker():
    """Workers leave Ctrl-C to the main process, which stops them cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    without_cycle_collector()


def without_cycle_collector():
    """Values make no reference cycles (children point back, nothing points forward), so
    CPython's reference counting frees each graph the moment it is done with, and its cyclic
    collector would only rescan the ~20K live Values again and again: switching it off saves
    10% of a training step (measured). PyPy has no reference counting: its collector is what
    frees graphs, so it stays on (off, memory grew to 2.3 GB in 400 steps)."""
    if sys.implementation.name == 'cpython':
        gc.disable()


def split_evenly(items, n):
    """items cut into at most n consecutive shares of near-equal size."""
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _gradient_job(job):
    """In a worker process: name_gradient for a share of the batch, on a copy of the model."""
    cfg, mask_id, float_params, items = job
    params, values = _replica(float_params)
    denoise = DENOISERS[cfg.denoiser][1]
    return [name_gradient(denoise, params, values, cfg, tokens, t, mask_id, seed)
            for tokens, t, seed in items]


_replicas = {}  # in a worker process: its Value copy of the parameters, by shape


def _replica(float_params):
    """(params, flatten(params)): this process's Values, set to float_params. They are made
    once and then only their numbers change, step after step: making 6,848 Values anew for
    every step cost 3 ms, a tenth of a name's gradient."""
    shape = tuple((name, len(rows), len(rows[0])) for name, rows in float_params.items())
    if shape not in _replicas:
        params = as_values(float_params)
        _replicas[shape] = params, flatten(params)
    params, values = _replicas[shape]
    for name, rows in float_params.items():
        for row, numbers in zip(params[name], rows):
            for p, x in zip(row, numbers):
                p.data = x
    return params, values


def _nelbo_job(job):
    """In a worker process (or this one): the NELBO estimate of each (tokens, seed)."""
    cfg, mask_id, float_params, items, one_pass = job
    denoise = DENOISERS[cfg.denoiser][1]
    estimate = nelbo_one_pass if one_pass else nelbo
    return [estimate(denoise, float_params, cfg, tokens, mask_id, random.Random(seed))
            for tokens, seed in items]


def _sample_job(job):
    """In a worker process (or this one): one name per seed, with its trace if asked for."""
    cfg, tok, float_params, how, seeds, want_trace = job
    denoise = DENOISERS[cfg.denoiser][1]
    results = []
    for seed in seeds:
        trace = [] if want_trace else None
        tokens = sample_tokens(denoise, float_params, cfg, tok, random.Random(seed), how, trace)
        results.append((tok.decode(tokens), trace))
    return results


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

class Model:
    """What a checkpoint holds: the configuration, the vocabulary and the parameters."""

    def __init__(self, cfg, tok, params):
        self.cfg, self.tok, self.params = cfg, tok, params
        self.denoise = DENOISERS[cfg.denoiser][1]

    @classmethod
    def new(cls, cfg, tok):
        shapes = DENOISERS[cfg.denoiser][0](cfg, tok.vocab_size)
        return cls(cfg, tok, init_params(shapes, cfg.init_std, random.Random(cfg.seed)))


class Batches:
    """The training names, step by step: each epoch a fresh shuffle seeded by (seed, epoch).

    Any step's names can be recomputed from its number alone, so a resumed run sees exactly
    the names an uninterrupted one would have.
    """

    def __init__(self, names, batch_size, seed):
        self.names, self.batch_size, self.seed = names, batch_size, seed
        self.epoch, self.order = None, None

    def at(self, step):
        batch = []
        for j in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, k = divmod(j, len(self.names))
            if epoch != self.epoch:
                self.epoch, self.order = epoch, list(self.names)
                random.Random(f'{self.seed}:epoch:{epoch}').shuffle(self.order)
            batch.append(self.order[k])
        return batch


def name_gradient(denoise, params, values, cfg, tokens, t, mask_id, seed):
    """One name's loss and its gradient (aligned with `values`), computed from zero."""
    with Tape() as tape:  # records the graph as it is built: backward's order, for free
        loss = diffusion_loss(denoise, params, cfg, tokens, t, mask_id, random.Random(seed))
    loss.backward(tape)
    grads = [p.grad for p in values]
    for p in values:
        p.grad = 0.0
    return loss.data, grads


def train_step(model, values, adam, names, step, workers):
    """One optimiser step on a batch of names; returns the batch's mean loss.

    The per-name gradients are added in batch order, so the sum is the same bit for bit
    whether one process or several computed them.
    """
    cfg, tok = model.cfg, model.tok
    rng = random.Random(f'{cfg.seed}:step:{step}')
    ts = noise_levels(rng, cfg.t_min, len(names))
    items = [(tok.encode(name, cfg.block_size), t, rng.getrandbits(64))
             for name, t in zip(names, ts)]
    if workers.n == 1:
        results = [name_gradient(model.denoise, model.params, values, cfg, tokens, t, tok.MASK,
                                 seed) for tokens, t, seed in items]
    else:
        shared = (cfg, tok.MASK, as_floats(model.params))
        jobs = [shared + (share,) for share in split_evenly(items, workers.n)]
        results = [r for share in workers.map(_gradient_job, jobs) for r in share]
    total = results[0][1]
    for _, grads in results[1:]:
        total = list(map(add, total, grads))
    loss = sum([r[0] for r in results]) / len(results)
    if not math.isfinite(loss):
        raise Diverged(f'the loss became {loss}')
    if not math.isfinite(sum(map(abs, total))):
        raise Diverged('a gradient became infinite')
    adam.step([g / len(results) for g in total], learning_rate(cfg, step))
    return loss


class Diverged(Exception):
    """The loss or a gradient stopped being a finite number."""


def train(model, train_names, val_names, data_fingerprint, checkpoint, workers, state=None,
          stop_after=None):
    """Train model.params in place for model.cfg.steps steps (or continue from `state`),
    showing progress on stderr and saving the checkpoint at every validation and at the end.

    Ctrl-C finishes the current step, saves, and raises KeyboardInterrupt. A loss that is not
    finite raises Diverged and leaves the last checkpoint saved as it was. stop_after (tests)
    ends the run early, as Ctrl-C would.
    """
    cfg = model.cfg
    values = flatten(model.params)
    adam = Adam(values, cfg)
    step = 0
    if state:
        step = state['step']
        adam.t, adam.m, adam.v = state['adam_t'], state['adam_m'], state['adam_v']
    batches = Batches(train_names, cfg.batch_size, cfg.seed)
    progress = Progress(cfg.steps, 'step', step)
    smooth = Smoothed()
    val = None
    val_subset = val_names[:cfg.val_names]
    interrupted = []
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    saved_at = step if state else None  # the step the checkpoint on disk holds

    def save():
        training = {'step': step, 'settings': asdict(cfg), 'data_fingerprint': data_fingerprint,
                    'adam_t': adam.t, 'adam_m': adam.m, 'adam_v': adam.v}
        save_checkpoint(checkpoint, model, training)

    try:
        while step < cfg.steps and not interrupted and step != stop_after:
            try:
                loss = train_step(model, values, adam, batches.at(step), step, workers)
            except (Diverged, ArithmeticError) as e:
                progress.finish()
                kept = 'is untouched' if saved_at is None else f'keeps step {saved_at}'
                raise Diverged(f'training diverged at step {step + 1} ({e}); {checkpoint} '
                               f'{kept}; try a smaller --lr') from None
            step += 1
            validated = val_subset and (step % cfg.val_every == 0 or step == cfg.steps)
            if validated:
                val = statistics.fmean(validation(model, val_subset, workers))
                save()
                saved_at = step
            detail = f'loss {loss:.3f}  smooth {smooth.add(loss):.3f}'
            if val is not None:
                detail += f'  val NELBO ~{val:.2f}'
            progress.update(step, detail, force=validated)
        if saved_at != step:
            save()
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        progress.finish()
    if interrupted:
        raise KeyboardInterrupt(step)
    return step


def validation(model, names, workers):
    """One-pass NELBO estimates of held-out names, always with the same seed, so successive
    validations differ only because the model changed."""
    try:
        return nelbo_estimates(model, names, 0, workers, one_pass=True)
    except ArithmeticError as e:
        raise Diverged(f'validation overflowed ({e}); try a smaller --lr') from None


class Progress:
    """One status line on stderr for long work: how far, the caller's figures, the speed and
    the time left. Rewritten in place on a terminal; on a pipe, a line at every tenth."""

    def __init__(self, total, unit, start=0, stream=None):
        self.total, self.unit, self.start = total, unit, start
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.began = time.perf_counter()
        self.shown = False

    def update(self, done, detail='', force=False):
        speed = (done - self.start) / max(time.perf_counter() - self.began, 1e-9)
        line = (f'{self.unit} {done}/{self.total}  {detail}{"  " if detail else ""}'
                f'{speed:.1f} {self.unit}s/s  {format_time((self.total - done) / speed)} left')
        if self.live:
            self.stream.write('\r' + line + '\033[K')
            self.shown = True
        elif force or done == self.total or done % max(1, self.total // 10) == 0:
            self.stream.write(line + '\n')
        self.stream.flush()

    def finish(self):
        if self.shown:
            self.stream.write('\n')
            self.shown = False


class Smoothed:
    """An exponential moving average over ~50 values, bias-corrected while it warms up."""

    def __init__(self, keep=0.98):
        self.keep, self.total, self.weight = keep, 0.0, 0.0

    def add(self, x):
        self.total = self.keep * self.total + (1 - self.keep) * x
        self.weight = self.keep * self.weight + (1 - self.keep)
        return self.total / self.weight


def format_time(seconds):
    seconds = int(seconds)
    return f'{seconds // 60}m{seconds % 60:02d}s' if seconds >= 60 else f'{seconds}s'


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def save_checkpoint(path, model, training=None):
    """One JSON file: the vocabulary, the model's shape, the weights [out][in], and what
    --resume needs. Floats are written with repr, so they read back exactly."""
    doc = {'format': 'microdiffusion checkpoint', 'version': 1,
           'chars': model.tok.chars,
           'config': {f: getattr(model.cfg, f) for f in MODEL_FIELDS},
           'params': as_floats(model.params)}
    if training:
        doc['training'] = training
    write_atomic(path, json.dumps(doc, allow_nan=False))


def write_atomic(path, text):
    """Write a temporary file beside `path`, then rename it over `path`: a crash at any moment
    leaves either the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check_writable(path):
    """Fail now, not after an hour of training, if the checkpoint cannot be written."""
    if os.path.isdir(path):
        raise UserError(f'{path}: is a folder; give a file name for the checkpoint')
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.')
    except OSError as e:
        raise UserError(f'{path}: cannot write a checkpoint there ({e.strerror}); '
                        'choose another --checkpoint') from None
    os.close(fd)
    os.unlink(tmp)


def load_checkpoint(path):
    """(model, training state or None), every part checked before anything is used."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f'{path}: no such checkpoint; train one first '
                        f'(python microdiffusion.py train) or pass --checkpoint') from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'{path}: cannot be read as a checkpoint ({e})') from None

    def reject(constant):
        raise UserError(f'{path}: holds {constant}, not a finite number; the checkpoint is damaged')

    try:
        doc = json.loads(text, parse_constant=reject)
    except json.JSONDecodeError as e:
        raise UserError(f'{path}: is not a microdiffusion checkpoint (not JSON: {e})') from None

    def bad(what):
        return UserError(f'{path}: not a valid microdiffusion checkpoint ({what})')

    if not isinstance(doc, dict) or doc.get('format') != 'microdiffusion checkpoint':
        raise bad('no "format": "microdiffusion checkpoint" in it')
    chars = doc.get('chars')
    if (not isinstance(chars, list) or not chars or len(set(chars)) != len(chars)
            or not all(isinstance(c, str) and len(c) == 1 for c in chars)):
        raise bad('"chars" must list distinct single characters')
    shape = doc.get('config')
    if not isinstance(shape, dict):
        raise bad('no "config"')
    cfg = Config()
    for name in MODEL_FIELDS:
        value = shape.get(name, getattr(cfg, name))
        wanted = type(getattr(cfg, name))
        if type(value) is not wanted or (wanted is int and value < 1):
            raise bad(f'config {name} = {value!r}')
        setattr(cfg, name, value)
    if cfg.denoiser not in DENOISERS or cfg.n_embd % cfg.n_head:
        raise bad(f'config: denoiser {cfg.denoiser!r}, n_embd {cfg.n_embd}, n_head {cfg.n_head}')
    tok = Tokenizer(chars)
    shapes = DENOISERS[cfg.denoiser][0](cfg, tok.vocab_size)
    params = doc.get('params')
    if not isinstance(params, dict) or set(params) != set(shapes):
        raise bad(f'"params" must have exactly {", ".join(sorted(shapes))}')
    for name, (n_rows, n_cols) in shapes.items():
        if not is_matrix(params[name], n_rows, n_cols):
            raise bad(f'{name} should be {n_rows} x {n_cols} finite numbers')
    model = Model(cfg, tok, as_values(params))
    training = doc.get('training')
    if training is not None:
        check_training_state(training, len(flatten(model.params)), bad)
        if any(training['settings'][name] != getattr(cfg, name) for name in MODEL_FIELDS):
            raise bad('"training" settings disagree with "config"')
    return model, training


def is_matrix(rows, n_rows, n_cols):
    return (isinstance(rows, list) and len(rows) == n_rows
            and all(isinstance(r, list) and len(r) == n_cols and all(map(is_number, r))
                    for r in rows))


def is_number(x):
    return type(x) in (int, float) and math.isfinite(x)


def check_training_state(training, n_params, bad):
    """Raise bad(...) unless `training` is a state --resume can continue from; its settings
    are left holding exactly Config's fields."""
    if not isinstance(training, dict) or not isinstance(training.get('settings'), dict):
        raise bad('"training" must hold the run\'s "settings"')
    settings, defaults = training['settings'], asdict(Config())
    missing = sorted(set(defaults) - set(settings))
    if missing:
        raise bad(f'"training" settings lack {", ".join(missing)}')
    # Settings an older version recorded that no longer shape training (the sampling
    # temperatures, now chosen when sampling) are dropped: the run continues the same.
    training['settings'] = {name: settings[name] for name in defaults}
    settings = training['settings']
    for name, default in defaults.items():
        value = settings[name]
        fits = type(value) is type(default) or (type(default) is float and type(value) is int)
        if not fits or (isinstance(value, (int, float)) and not is_number(value)):
            raise bad(f'"training" setting {name} = {value!r}')
    if not (type(training.get('step')) is int and 0 <= training['step'] <= settings['steps']
            and type(training.get('adam_t')) is int and settings['batch_size'] >= 1):
        raise bad('"training" step, adam_t or batch_size out of range')
    if not isinstance(training.get('data_fingerprint'), str):
        raise bad('"training" has no data_fingerprint')
    for key in ('adam_m', 'adam_v'):
        moments = training.get(key)
        if not (isinstance(moments, list) and len(moments) == n_params
                and all(map(is_number, moments))):
            raise bad(f'"training" {key} must hold {n_params} finite numbers')


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def nelbo_estimates(model, names, seed, workers, one_pass=False, on_progress=None):
    """The NELBO estimate of each name (nats), each from its own seeded random generator."""
    cfg, tok = model.cfg, model.tok
    rng = random.Random(f'{seed}:nelbo')
    items = [(tok.encode(name, cfg.block_size), rng.getrandbits(64)) for name in names]
    shared = (cfg, tok.MASK, as_floats(model.params))
    jobs = [shared + (share, one_pass) for share in split_evenly(items, max(1, len(items) // 10))]
    estimates = []
    for share in workers.map(_nelbo_job, jobs):
        estimates += share
        if on_progress:
            on_progress(len(estimates), len(items))
    return estimates


def sample_names(model, n, seed, how, workers, want_trace=False):
    """n names (with traces), in order as they are made; each from its own seeded generator."""
    rng = random.Random(f'{seed}:sample')
    seeds = [rng.getrandbits(64) for _ in range(n)]
    shared = (model.cfg, model.tok, as_floats(model.params), how)
    jobs = [shared + (share, want_trace) for share in split_evenly(seeds, max(1, n // 4))]
    for share in workers.map(_sample_job, jobs):
        yield from share


def length_histogram(names, block_size):
    counts = [0] * (block_size + 1)
    for name in names:
        counts[len(name)] += 1
    return [c / len(names) for c in counts]


def sample_report(samples, train_names, held_out, block_size):
    """Lines describing sampled names against the data: new, unique, length."""
    train, held = set(train_names), set(held_out)
    data = train_names + held_out
    new = [s for s in samples if s not in train]
    seen_real = sum(1 for s in new if s in held)
    mine, theirs = length_histogram(samples, block_size), length_histogram(data, block_size)
    tv = sum(abs(a - b) for a, b in zip(mine, theirs)) / 2
    lines = [f'{len(samples)} names: {len(new) / len(samples):.1%} new (not in the training data; '
             f'{seen_real} of them are held-out real names), '
             f'{len(set(samples)) / len(samples):.1%} unique',
             f'mean length {statistics.fmean(map(len, samples)):.2f} '
             f'(data {statistics.fmean(map(len, data)):.2f}), length histogram total variation '
             f'{tv:.3f}',
             'length    data  samples   (each # is 2% of names)']
    for length in range(block_size + 1):
        if mine[length] or theirs[length]:
            data_bar, sample_bar = '#' * round(theirs[length] * 50), '#' * round(mine[length] * 50)
            lines.append(f'{length:6d}  {theirs[length]:6.1%}  {mine[length]:6.1%}   '
                         f'{data_bar:<20s}|{sample_bar}')
    return lines


def nelbo_summary(estimates, names):
    """(mean nats/name, its standard error, bits per character) for a list of estimates.
    Characters are counted as len(name) + 1: the +1 is the end of the name."""
    mean = statistics.fmean(estimates)
    stderr = statistics.stdev(estimates) / math.sqrt(len(estimates)) if len(estimates) > 1 else 0.0
    chars = sum(len(n) + 1 for n in names)
    return mean, stderr, sum(estimates) / math.log(2) / chars


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'names.txt')


DEFAULT_CHECKPOINT = 'model.json'


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is reported in one line, with where to find help."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'{value} is below the minimum, {minimum}')
        return value
    return parse


def positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'{text} must be a positive, finite number')
    return value


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def training_processes():
    """How many processes train by default: every CPU, but one under PyPy. There a pool of two
    measured slower than one process (600 steps of 4: 20.4 s against 13.5 s), most likely
    because every step's weights and gradients cross between processes through pickle, which
    is much slower on PyPy (not verified further)."""
    return 1 if sys.implementation.name == 'pypy' else available_cpus()


def build_parser():
    parser = Parser(prog='microdiffusion.py',
                    description='Masked text diffusion on names, in pure Python. With no '
                                'command: train on names.txt, save model.json, print 20 names.')
    commands = parser.add_subparsers(dest='command', metavar='command')
    workers = dict(type=at_least(1), default=available_cpus(),
                   help='processes to use (default: every CPU; results do not depend on it)')

    train = commands.add_parser('train', help='train a model and save a checkpoint')
    train.add_argument('--data', default=DEFAULT_DATA, help='names, one per line (names.txt)')
    train.add_argument('--steps', type=at_least(1), help=f'optimiser steps ({Config.steps})')
    train.add_argument('--batch-size', type=at_least(1),
                       help=f'names per step ({Config.batch_size})')
    train.add_argument('--lr', type=positive_number, help=f'peak learning rate ({Config.lr})')
    train.add_argument('--seed', type=int, help=f'random seed ({Config.seed})')
    train.add_argument('--checkpoint', default=DEFAULT_CHECKPOINT,
                       help='where to save (model.json)')
    train.add_argument('--resume', action='store_true',
                       help='continue the run saved in --checkpoint, exactly where it stopped')
    train.add_argument('--denoiser', choices=sorted(DENOISERS), help='transformer (default) or mlp')
    train.add_argument('--workers', type=at_least(1), default=training_processes(),
                       help='processes to use (default: every CPU, or one under PyPy, where '
                            'that is faster; results do not depend on it)')

    sample = commands.add_parser('sample', help='print new names from a checkpoint')
    sample.add_argument('--checkpoint', default=DEFAULT_CHECKPOINT)
    sample.add_argument('--num', type=at_least(1), default=20, help='how many names (20)')
    sample.add_argument('--seed', type=int, default=0)
    sample.add_argument('--steps', type=at_least(1), default=Sampling.steps,
                        help=f'reverse steps ({Sampling.steps})')
    sample.add_argument('--pattern',
                        help="fixed letters, '_' to fill, a final '*': e.g. m_r__, ka*")
    sample.add_argument('--temp-start', type=positive_number, default=Sampling.temp_start,
                        help=f'temperature at t = 1, the first step ({Sampling.temp_start})')
    sample.add_argument('--temp-end', type=positive_number, default=Sampling.temp_end,
                        help=f'temperature at t = 0, the last step ({Sampling.temp_end})')
    sample.add_argument('--temperature', type=positive_number, default=Sampling.temperature,
                        help='scales both: 0.5 halves every step\'s temperature (1)')
    sample.add_argument('--remask', choices=('confidence', 'random'), default='confidence')
    sample.add_argument('--trace', action='store_true', help='show each reverse step (stderr)')
    sample.add_argument('--stats', action='store_true',
                        help='new, unique and length figures against --data (stderr)')
    sample.add_argument('--data', default=DEFAULT_DATA, help='the training data, for --stats')
    sample.add_argument('--workers', **workers)

    evaluate = commands.add_parser('eval', help='negative ELBO of names under a checkpoint')
    evaluate.add_argument('--checkpoint', default=DEFAULT_CHECKPOINT)
    evaluate.add_argument('--data', action='append',
                          help='a file of names (repeatable); default: the validation split '
                               'of names.txt')
    evaluate.add_argument('--seed', type=int, default=0, help='seed of the random orders')
    evaluate.add_argument('--workers', **workers)

    forward = commands.add_parser('forward', help='show the forward (masking) process on a name')
    forward.add_argument('name')
    forward.add_argument('--seed', type=int, default=0)

    bench = commands.add_parser('bench', help='time training steps, forward passes, samples')
    bench.add_argument('--checkpoint', default=DEFAULT_CHECKPOINT,
                       help='time these weights if the file exists (model.json)')
    bench.add_argument('--repeats', type=at_least(3), default=30, help='timings per figure (30)')
    return parser


def run_lab(args):
    """python microdiffusion.py: the whole lab with the defaults."""
    cfg = Config()
    names = load_names(DEFAULT_DATA, cfg.block_size)
    model = train_new(cfg, names, DEFAULT_CHECKPOINT, training_processes())
    print(f'saved {DEFAULT_CHECKPOINT}; 20 new names:', file=sys.stderr)
    with Workers(min(available_cpus(), 4)) as workers:
        for name, _ in sample_names(model, 20, 0, Sampling(), workers):
            print(name, flush=True)
    return 0


def train_new(cfg, names, checkpoint, n_workers):
    """A fresh model trained on names, saved to checkpoint."""
    train_names, held_out = split_names(names, cfg.val_size)
    tok = Tokenizer.from_names(names)
    check_writable(checkpoint)
    model = Model.new(cfg, tok)
    print(f'training a {cfg.denoiser} ({len(flatten(model.params)):,} parameters) on '
          f'{len(train_names):,} names ({len(held_out):,} held out) for {cfg.steps} steps of '
          f'{cfg.batch_size}', file=sys.stderr)
    with Workers(min(n_workers, cfg.batch_size)) as workers:
        train(model, train_names, held_out, fingerprint(train_names), checkpoint, workers)
    return model


def run_train(args):
    if args.resume:
        return resume(args)
    cfg = Config()
    for flag, field in (('steps', 'steps'), ('batch_size', 'batch_size'), ('lr', 'lr'),
                        ('seed', 'seed'), ('denoiser', 'denoiser')):
        if getattr(args, flag) is not None:
            setattr(cfg, field, getattr(args, flag))
    names = load_names(args.data, cfg.block_size)
    train_new(cfg, names, args.checkpoint, args.workers)
    print(f'saved {args.checkpoint}', file=sys.stderr)
    return 0


def resume(args):
    model, state = load_checkpoint(args.checkpoint)
    if state is None:
        raise UserError(f'{args.checkpoint}: has no training state to resume from')
    cfg = model.cfg
    names = load_names(args.data, cfg.block_size)
    train_names, held_out = split_names(names, cfg.val_size)
    if Tokenizer.from_names(names).chars != model.tok.chars:
        raise UserError(f'{args.data}: its characters differ from the checkpoint\'s vocabulary; '
                        'resume with the data it was trained on')
    if fingerprint(train_names) != state['data_fingerprint']:
        raise UserError(f'{args.data}: is not the data {args.checkpoint} was trained on; '
                        'resume with the same file')
    cfg = Config(**state['settings'])  # every setting of the stopped run: it continues exactly
    model.cfg = cfg
    for flag in ('batch_size', 'lr', 'seed', 'denoiser'):
        given = getattr(args, flag)
        if given is not None and given != getattr(cfg, flag):
            raise UserError(f'--{flag.replace("_", "-")}: a resumed run keeps its checkpoint\'s '
                            f'{getattr(cfg, flag)}; start a new run to change it')
    if args.steps is not None:
        if args.steps < state['step']:
            raise UserError(f'--steps {args.steps}: the checkpoint is already at step '
                            f'{state["step"]}')
        cfg.steps = args.steps
    if state['step'] >= cfg.steps:
        raise UserError(f'{args.checkpoint}: already trained for {cfg.steps} steps; pass '
                        f'--steps with a larger total to continue')
    check_writable(args.checkpoint)
    print(f'resuming {args.checkpoint} at step {state["step"]} of {cfg.steps}', file=sys.stderr)
    with Workers(min(args.workers, cfg.batch_size)) as workers:
        train(model, train_names, held_out, state['data_fingerprint'], args.checkpoint,
              workers, state)
    print(f'saved {args.checkpoint}', file=sys.stderr)
    return 0


def run_sample(args):
    model, _ = load_checkpoint(args.checkpoint)
    how = Sampling(steps=args.steps, temp_start=args.temp_start, temp_end=args.temp_end,
                   temperature=args.temperature, remask=args.remask)
    if args.pattern is not None:
        how.template, how.candidates = parse_pattern(args.pattern, model.tok, model.cfg.block_size)
    if args.stats:  # read the data first: a bad file should fail before the sampling
        train_names, held_out = split_names(load_names(args.data, model.cfg.block_size),
                                            Config.val_size)
    samples = []
    with Workers(min(args.workers, args.num)) as workers:
        for name, trace in sample_names(model, args.num, args.seed, how, workers, args.trace):
            if trace is not None:
                print_trace(trace, model.tok, len(samples) + 1)
            print(name, flush=True)
            samples.append(name)
    if args.stats:
        for line in sample_report(samples, train_names, held_out, model.cfg.block_size):
            print(line, file=sys.stderr)
    return 0


def print_trace(trace, tok, number):
    print(f'name {number}: reverse process ("_" is MASK, "." is PAD)', file=sys.stderr)
    for i, t, T, tokens in trace:
        print(f'  step {i:3d}  t={t:.3f}  T={T:.3f}  {tok.show(tokens)}', file=sys.stderr)


def run_eval(args):
    model, state = load_checkpoint(args.checkpoint)
    cfg = model.cfg
    if args.data:
        sets = [(path, load_names(path, cfg.block_size)) for path in args.data]
    else:
        names = load_names(DEFAULT_DATA, cfg.block_size)
        train_names, held_out = split_names(names, Config.val_size)
        if state is None or fingerprint(train_names) != state['data_fingerprint']:
            raise UserError(f'{args.checkpoint} was not trained on {DEFAULT_DATA}, so its '
                            'validation split is unknown; pass --data FILE')
        sets = [(f'{os.path.basename(DEFAULT_DATA)} validation split', held_out)]
    everything, all_estimates = [], []
    with Workers(args.workers) as workers:
        for label, names in sets:
            check_vocabulary(names, model.tok, label)
            progress = Progress(len(names), 'name')
            estimates = nelbo_estimates(model, names, args.seed, workers,
                                        on_progress=lambda done, _: progress.update(done))
            progress.finish()
            mean, stderr, bits = nelbo_summary(estimates, names)
            print(f'{label}: {mean:.2f} ± {stderr:.2f} nats/name, {bits:.3f} bits/char '
                  f'({len(names)} names, one random order each, seed {args.seed})')
            everything += names
            all_estimates += estimates
    mean, _, bits = nelbo_summary(all_estimates, everything)
    print(f'NELBO {mean:.2f} nats/name  {bits:.3f} bits/char  ({len(everything)} names)')
    return 0


def check_vocabulary(names, tok, label):
    for name in names:
        unknown = sorted(set(name) - set(tok.chars))
        if unknown:
            raise UserError(f'{label}: {name!r} has {"".join(unknown)!r}, which the model\'s '
                            'vocabulary lacks, so its probability is 0')


def run_forward(args):
    name = args.name.strip()
    block_size = Config.block_size
    if not name or len(name) > block_size:
        raise UserError(f'give a name of 1 to {block_size} characters, not {args.name!r}')
    tok = Tokenizer.from_names([name])
    tokens = tok.encode(name, block_size)
    print(f'forward process on {name!r}: each of the {block_size} positions (PAD included) '
          'is masked with probability t ("_" is MASK, "." is PAD)')
    for tenth in range(11):
        t = tenth / 10
        # the same seed at every t: a position masked at one level stays masked above it
        noisy = mask(tokens, t, tok.MASK, random.Random(args.seed))
        print(f'  t={t:.1f}  {tok.show(noisy)}  {noisy.count(tok.MASK) / block_size:4.0%} masked')
    return 0


def run_bench(args):
    """Figures for the current configuration, on this machine, in one process."""
    names = load_names(DEFAULT_DATA, Config.block_size)
    # A step's cost depends on the weights (how many ReLU units are alive): time trained ones.
    if os.path.exists(args.checkpoint):
        model, _ = load_checkpoint(args.checkpoint)
        weights = f'the weights in {args.checkpoint}'
    else:
        model = Model.new(Config(), Tokenizer.from_names(names))
        weights = 'freshly initialised weights (train first: trained ones cost differently)'
    cfg, tok = model.cfg, model.tok
    check_vocabulary(names, tok, DEFAULT_DATA)
    values = flatten(model.params)
    adam = Adam(values, cfg)
    picks = random.Random(0).sample(names, args.repeats)
    print(f'bench: {cfg.denoiser} with {len(values):,} parameters, {weights}, batch size 1, '
          f'{sys.implementation.name} {sys.version.split()[0]}')
    with Workers(1) as workers:
        step_times = timed(lambda i: train_step(model, values, adam, [picks[i]], i, workers),
                           args.repeats)
    report_time('training step (forward + backward + Adam)', step_times)
    sizes = [graph_size(model, tok.encode(name, cfg.block_size), random.Random(i))
             for i, name in enumerate(picks)]
    floats = as_floats(model.params)
    everywhere = list(range(cfg.block_size))
    report_time(f'forward pass, no graph, all {cfg.block_size} positions masked',
                timed(lambda i: model.denoise(floats, cfg, [tok.MASK] * cfg.block_size,
                                              everywhere), args.repeats))
    report_time('sampled name (64 reverse steps)',
                timed(lambda i: sample_tokens(model.denoise, floats, cfg, tok,
                                              random.Random(i), Sampling()), args.repeats))
    nodes = statistics.median(s[0] for s in sizes)
    edges = statistics.median(s[1] for s in sizes)
    print(f'graph per training step: {nodes:,.0f} nodes, {edges:,.0f} edges (median)')
    return 0


def timed(fn, repeats):
    times = []
    for i in range(repeats):
        began = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - began)
    return times


def report_time(label, times):
    print(f'{label}: {statistics.median(times) * 1000:.1f} ms median of {len(times)}', flush=True)


def graph_size(model, tokens, rng):
    """(nodes, edges) of one name's training graph, counting what backward reaches."""
    t = noise_levels(rng, model.cfg.t_min, 1)[0]
    loss = diffusion_loss(model.denoise, model.params, model.cfg, tokens, t, model.tok.MASK, rng)
    interior = topological_order(loss)
    leaves = {child for node in interior for child in node._children if not child._children}
    return len(interior) + len(leaves), sum(len(node._children) for node in interior)


COMMANDS = {None: run_lab, 'train': run_train, 'sample': run_sample, 'eval': run_eval,
            'forward': run_forward, 'bench': run_bench}


def main(argv=None):
    args = build_parser().parse_args(argv)
    without_cycle_collector()
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
    except Diverged as e:
        print(f'error: {e}', file=sys.stderr)
    except ArithmeticError as e:  # only weights far outside anything training produces
        print(f'error: the model\'s numbers overflowed ({e}); is the checkpoint damaged?',
              file=sys.stderr)
    except KeyboardInterrupt as e:
        if e.args:  # from train(), which saved the last finished step
            print(f'interrupted: step {e.args[0]} saved; continue with '
                  f'"python microdiffusion.py train --resume"', file=sys.stderr)
        else:
            print('interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sample | head -3`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 1


if __name__ == '__main__':
    sys.exit(main())
