"""microdiffusion: masked (absorbing-state) text diffusion, in pure Python.

It learns names by erasing letters and predicting them back, and invents new ones by filling
in a blank, a few letters at a time.

    forward process (training): erase each letter with probability t; the end stays visible

        t = 0     e m m a .           "." is PAD: the name has ended (never erased)
        t = 0.3   e _ m a .           "_" is MASK: an erased letter
        t = 0.7   _ _ m _ .
        t = 1     _ _ _ _ .

    reverse process (sampling): draw the length, then predict every MASK, keep the surest, repeat

        n = 5     _ _ _ _ _ .         the length, from the training names' histogram
        t = 0.7   _ _ _ _ a .
        t = 0.3   m _ r _ a .
        t = 0     m a r i a .         -> "maria"

The model is p(name) = p(length) · p(letters | length): the length is counted from the data,
and the transformer only ever reads a name's letters and its end. (--padding trains the older
way: every name PAD-filled to block_size, each PAD erased and predicted like a letter.)
Running text has no ends: a window of block_size characters, written block after block.

This file is the algorithm, in order: configuration, tokenizer, parameters, the denoiser (a
tiny transformer on value.py's scalar autograd), the noise and the loss, the sampler, the ELBO,
Adam, training; GPT, the same transformer reading left to right, is marked where it differs.
`python microdiffusion.py` runs the lab around it (lab.py): it trains and prints 20 names.
"""

import math
import random
from dataclasses import dataclass, replace

from value import (Tape, Value, dot, logsumexp, matmul, relu, relu_matmul, softmax_average,
                   vsum)


@dataclass
class Config:
    # --- the denoiser (a checkpoint records these: they fix the shape of the parameters) ---
    n_embd: int = 16        # numbers per position: room for a letter, its place, its context
    n_head: int = 4         # attention heads, each n_embd // n_head = 4 numbers wide
    n_layer: int = 2        # layers: the first gathers clues from the letters, the second combines
    block_size: int = 16    # positions: the longest name in names.txt (15) and its end
    model: str = 'diffusion'  # or 'gpt': the same transformer, causal, trained on next tokens
    denoiser: str = 'transformer'  # or 'mlp': the diffusion code around it is the same
    mlp_hidden: int = 8     # the mlp denoiser's width: 7,168 weights, near the transformer's
    padding: bool = False   # True: names PAD-filled to block_size, every PAD erased and scored
    text: bool = False      # True: running text, windows of block_size characters, no ends
    init_std: float = 0.08  # weights start N(0, 0.08): small, so first guesses are near uniform
    # --- the forward process and training ---
    t_min: float = 0.2      # lowest noise level trained on (MDLM: all of (0, 1]; tiny model: focus)
    steps: int = 1800       # optimiser steps: 28,800 names, the lab in 3 minutes on 2 cores
    batch_size: int = 16    # names per step, their gradients averaged
    lr: float = 0.01        # Adam's peak learning rate; it decays linearly towards 0
    warmup: int = 0         # steps of linear warm-up to the peak
    beta1: float = 0.85     # Adam's gradient average forgets in ~1/(1-0.85) = 7 steps
    beta2: float = 0.95     # and its squared-gradient average in ~20 steps
    adam_eps: float = 1e-8  # keeps Adam's step finite where a gradient is ~0
    seed: int = 42          # every random choice (init, batches, noise) follows from it
    val_size: int = 1000    # names held out of training, to measure what was not memorised
    val_every: int = 500    # steps between validation estimates on the progress line
    val_names: int = 200    # held-out names per estimate (eval uses them all)

    def longest(self):
        """Names hold one position for the end (or a GPT's start): text, --padding fill it."""
        return self.block_size - (not self.text and (self.model == 'gpt' or not self.padding))


# --- Tokenizer: a name is its characters, then PAD -------------------------------------------

class Tokenizer:
    """Characters <-> token ids: the data's sorted characters, then MASK, then PAD."""

    def __init__(self, chars):
        self.chars = list(chars)        # token i < len(chars) is the character chars[i]
        self.MASK = len(self.chars)     # an erased position: read by the model, never predicted
        self.PAD = len(self.chars) + 1  # "the name has ended": the token after the last letter
        self.vocab_size = len(self.chars) + 2
        self.ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_names(cls, names):
        return cls(sorted(set(''.join(names))))

    def encode(self, name, size):
        return [self.ids[c] for c in name] + [self.PAD] * (size - len(name))

    def decode(self, tokens):
        """The name a sequence spells: its characters up to the first PAD, which ends it."""
        if self.MASK in tokens:
            raise ValueError('decode: the sequence still has MASK in it')
        end = tokens.index(self.PAD) if self.PAD in tokens else len(tokens)
        return ''.join([self.chars[t] for t in tokens[:end]])


def load_names(path):
    """The names in a UTF-8 file, one per line (the lab's reader checks the file first)."""
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def length_odds(names, block_size):
    """p(length) for lengths 0 .. block_size - 1: the names' histogram, with one more count for
    every length from 1 up (add-one smoothing), so no length the block holds is impossible."""
    counts = [0] + [1] * (block_size - 1)
    for name in names:
        if not name:
            raise ValueError('an empty name: it has no letters to learn')
        counts[len(name)] += 1
    return [c / sum(counts) for c in counts]


# --- Parameters: named matrices of Values, stored [out][in], no biases -----------------------

def transformer_shapes(cfg, vocab_size):
    """The transformer's weight matrices, name -> (rows, columns). wte has two jobs (weight
    tying): row v embeds token v, and the logit of token v is the final vector · that row."""
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
    return {name: [[Value(rng.gauss(0.0, std)) for _ in range(n_in)] for _ in range(n_out)]
            for name, (n_out, n_in) in shapes.items()}


def flatten(params):
    """Every parameter once, in a fixed order: what the optimiser updates."""
    return [p for name in sorted(params) for row in params[name] for p in row]


def as_floats(params):
    """A copy of the parameters as plain floats: the same model, run with no graph at all."""
    return {name: [[p.data for p in row] for row in rows] for name, rows in params.items()}


# --- The denoiser: tokens in, logits out at the positions asked about ------------------------
# Every function here works on Values (training: it builds the graph backward() needs) and on
# plain floats (sampling and evaluation: no graph, several times faster). A vector is a list of
# n_embd numbers; `xs` holds one vector per position.

def rmsnorm(x):
    """x / sqrt(mean(x²) + 1e-5): every vector leaves with root-mean-square ~1 (no gain)."""
    scale = (dot(x, x) / len(x) + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def attention(params, prefix, xs, queries, n_head, causal):
    """x + wo · multi-head self-attention of rmsnorm(x), at each query position. Diffusion's is
    bidirectional: every query reads every position, the letters on both sides of a MASK."""
    normed = [rmsnorm(x) for x in xs]
    qs = matmul(params[prefix + 'attn_wq'], [normed[i] for i in queries])
    ks = matmul(params[prefix + 'attn_wk'], normed)
    vs = matmul(params[prefix + 'attn_wv'], normed)
    head_dim = len(xs[0]) // n_head
    heads = [[] for _ in queries]  # per query, its heads' outputs side by side
    for h in range(n_head):
        dims = slice(h * head_dim, (h + 1) * head_dim)  # this head's share of each vector
        keys, values = [k[dims] for k in ks], [v[dims] for v in vs]
        scores = matmul(keys, [q[dims] for q in qs])     # per query: q · k at every position
        if causal:  # GPT: query i reads only positions 0..i (the first i + 1 values)
            scores = [s[:i + 1] for s, i in zip(scores, queries)]
        # weights = softmax(scores / √head_dim); output = Σ_j weights_j · v_j
        outputs = softmax_average(scores, values, 1 / math.sqrt(head_dim))
        for head, out in zip(heads, outputs):
            head += out
    residual = [xs[i] for i in queries]
    return matmul(params[prefix + 'attn_wo'], heads, adds=residual)  # x + wo · heads


def mlp(params, prefix, xs):
    """x + fc2 · relu(fc1 · rmsnorm(x)) at each position: n_embd -> 4·n_embd -> n_embd."""
    hidden = relu_matmul(params[prefix + 'mlp_fc1'], [rmsnorm(x) for x in xs])
    return matmul(params[prefix + 'mlp_fc2'], hidden, adds=xs)


def transformer(params, cfg, tokens, positions):
    """Token ids in; out, for each of `positions`, its logits: one number per token id."""
    wte, wpe = params['wte'], params['wpe']
    xs = [rmsnorm([t + p for t, p in zip(wte[tok], wpe[i])]) for i, tok in enumerate(tokens)]
    for layer in range(cfg.n_layer):
        prefix = f'layer{layer}.'
        # The last layer's outputs only feed logits, so it computes them only where asked.
        queries = positions if layer == cfg.n_layer - 1 else range(len(tokens))
        xs = attention(params, prefix, xs, queries, cfg.n_head, cfg.model == 'gpt')
        xs = mlp(params, prefix, xs)
    return matmul(wte, xs)  # weight tying: the logit of token v is x · wte[v]


def mlp_denoiser(params, cfg, tokens, positions):
    """The comparison denoiser: one-hot tokens of all positions -> ReLU hidden layer -> logits.
    It weighs every (position, token) of the block: PAD fills the rest of a shorter input."""
    vocab_size = len(params['mlp_in'][0]) // cfg.block_size
    tokens = tokens + [vocab_size - 1] * (cfg.block_size - len(tokens))  # PAD: the last id
    # W · onehot just adds up the columns of the tokens present, one per position.
    active = [i * vocab_size + tok for i, tok in enumerate(tokens)]
    hidden = [relu(vsum([row[j] for j in active])) for row in params['mlp_in']]
    out = params['mlp_out']
    return [matmul(out[i * vocab_size:(i + 1) * vocab_size], [hidden])[0] for i in positions]


DENOISERS = {'transformer': (transformer_shapes, transformer), 'mlp': (mlp_shapes, mlp_denoiser)}


class Model:
    """One thing to pass around: the configuration, vocabulary, parameters, denoiser, and
    p(length) where the model draws the length first (None where the end is a token it
    predicts, a GPT's or a --padding model's, and in running text, which has no end)."""

    def __init__(self, cfg, tok, params, denoiser=None, lengths=None):
        self.cfg, self.tok, self.params = cfg, tok, params
        self.denoiser = denoiser or DENOISERS[cfg.denoiser][1]
        end_is_a_token = (cfg.model == 'gpt' or cfg.padding) and not cfg.text
        self.length_first = not (end_is_a_token or cfg.text)
        # p(length): the histogram given, else every length alike
        self.lengths = (lengths or length_odds([], cfg.block_size)) if self.length_first else None
        # What a prediction may be: a character, and the end where it is a token
        self.outputs = list(range(len(tok.chars))) + [tok.PAD] * end_is_a_token

    @classmethod
    def new(cls, cfg, tok, lengths=None):
        shapes = DENOISERS[cfg.denoiser][0](cfg, tok.vocab_size)
        params = init_params(shapes, cfg.init_std, random.Random(cfg.seed))
        return cls(cfg, tok, params, lengths=lengths)

    def encode(self, name):
        """A name's tokens: its letters and its end, or (a GPT, --padding) PAD to the block's
        end; a window of running text: its characters alone."""
        if self.cfg.text:
            return self.tok.encode(name, len(name))
        return self.tok.encode(name, len(name) + 1 if self.length_first else self.cfg.block_size)

    def logits(self, tokens, positions):
        return self.denoiser(self.params, self.cfg, tokens, positions)

    def frozen(self):
        """The same model on plain floats: no graph, for sampling and evaluation."""
        return Model(self.cfg, self.tok, as_floats(self.params), self.denoiser, self.lengths)


# --- The forward process and the loss --------------------------------------------------------

def noise_levels(rng, t_min, n):
    """n noise levels t, each log-uniform on [t_min, 1]: as likely in [0.2, 0.45] as in [0.45, 1].
    A batch's levels are spread evenly from one random offset (MDLM's low-discrepancy sampler),
    so every batch mixes light and heavy noise. Why log-uniform: see diffusion_loss."""
    offset = rng.random()
    spread = [(i + offset) / n for i in range(n)]
    rng.shuffle(spread)
    return [math.exp(math.log(t_min) * (1 - u)) for u in spread]


def erasable(model, tokens):
    """Where the forward process may erase: the letters, not the end (--padding: anywhere)."""
    return list(range(len(tokens) - 1 if model.length_first else len(tokens)))


def erase(positions, t, rng):
    """The forward process at noise level t: each position erased with probability t."""
    return [i for i in positions if rng.random() < t]


def token_nll(logits, target, outputs):
    """-log p(target) under a softmax over the tokens the model may predict (model.outputs):
    never MASK (MDLM's SUBS parameterisation), and PAD only where the end is a prediction."""
    return logsumexp([logits[v] for v in outputs]) - logits[target]


def erased_nll(model, tokens, erased):
    """Σ -log p(x_i) over the positions `erased`, with exactly those positions masked."""
    noisy = [model.tok.MASK if i in erased else tok for i, tok in enumerate(tokens)]
    logits = model.logits(noisy, erased)
    return vsum([token_nll(lg, tokens[i], model.outputs) for i, lg in zip(erased, logits)])


def length_nll(model, tokens):
    """-log p(length), p(name)'s first factor; 0 where the end is a token (or there is none)."""
    return -math.log(model.lengths[len(tokens) - 1]) if model.length_first else 0.0


def diffusion_loss(model, tokens, t, rng):
    """One name's loss at noise level t: erase letters, predict them, and add up -log p of
    the erased ones (with --padding, PADs too: that is how such a model learns length).

    Why this estimates the NELBO (MDLM). With f(t) = E[Σ_{erased i} -log p(x_i | noisy)] at
    level t, the continuous-time bound is ∫_0^1 f(t)/t dt. Training covers t in [t_min, 1]:
    drawing t from q(t) = 1/(t · log(1/t_min)), the log-uniform density, and weighing f(t) by
    (1/t)/q(t) = log(1/t_min) is importance sampling, so log(1/t_min) times this sum is an
    unbiased estimate of ∫_{t_min}^1 f(t)/t dt: the NELBO's t >= t_min share, in nats per name,
    below the whole NELBO that validation reports (which adds -log p(length) too). A mask that
    erased nothing is drawn again, since it teaches nothing; weighing the sum by the chance
    that a mask is not empty, 1 - (1 - t)^L, keeps the estimate unbiased. A window of running
    text is masked as a name is (masking only its end, as write() fills it, measured worse)."""
    positions = erasable(model, tokens)
    erased = []
    while not erased:
        erased = erase(positions, t, rng)
    weight = math.log(1 / model.cfg.t_min) * (1 - (1 - t) ** len(positions))
    return erased_nll(model, tokens, erased) * weight


def gpt_loss(model, tokens, seen=0):
    """GPT's loss, and its exact -log p(name) by the chain rule: from a start token, predict
    each next token, the end (PAD) included (from token `seen` on). GPT never masks, so MASK's
    row of wte serves as the start token, and the MASK logit stays out of the softmax."""
    tok = model.tok
    name = tokens[:tokens.index(tok.PAD)] if tok.PAD in tokens else tokens
    inputs, targets = [tok.MASK] + name, name + [tok.PAD]
    if model.cfg.text:  # a window of running text has no end: the start, then its characters
        inputs, targets = inputs[:-1], targets[:-1]
    logits = model.logits(inputs, range(seen, len(inputs)))
    return vsum([token_nll(lg, y, model.outputs) for lg, y in zip(logits, targets[seen:])])


# --- The reverse process: the sampler --------------------------------------------------------

@dataclass
class Sampling:
    """How to run the reverse process."""
    steps: int = 64             # reverse steps on the cosine schedule (idle ones are skipped)
    temp_start: float = 1.0     # at t = 1 the model's own odds, re-masking at random (see draw)
    temp_end: float = 0.4       # at t = 0, colder: the last letters fit the first ones
    temperature: float = 1.0    # scales both: 1 keeps temp_start -> temp_end
    remask: str = 'confidence'  # which guesses go back under MASK: 'confidence' or 'random'
    order: str = 'any'          # or 'left-to-right', one position at a time (GPT's only order)
    length: str = 'first'       # --padding: the end drawn first, or 'along' like a letter
    pattern: tuple = None       # (head, tail) from parse_pattern; None: any name
    lengths: list = None        # p(length | pattern), from pattern_lengths (computed once)


def parse_pattern(pattern, model):
    """A pattern -> (head, tail): letters are fixed, '_' is one letter to fill in (MASK), and
    one '*' stands for any number of letters, 0 included, splitting head from tail (tail is
    None without one). 'm_r__' is five letters m?r??, 'ka*' starts "ka", '*lyn' ends "lyn".
    A GPT or a --padding model can only take '*' last."""
    tok, longest = model.tok, model.cfg.longest()
    head, star, tail = pattern.partition('*')
    if not pattern:
        raise ValueError("the pattern is empty; use '*' for any name")
    if '*' in tail:
        raise ValueError(f"pattern {pattern!r}: '*' may stand only once")
    if tail and not model.length_first:  # its end is found along the way, not drawn first
        raise ValueError(f"pattern {pattern!r}: '*' may only come last for this model")
    if len(head + tail) > longest:
        raise ValueError(f'pattern {pattern!r} has {len(head + tail)} positions; '
                         f'names have at most {longest}')
    unknown = sorted({c for c in head + tail if c != '_' and c not in tok.ids})
    if unknown:
        raise ValueError(f'pattern {pattern!r}: {"".join(unknown)!r} not in the vocabulary '
                         f'{"".join(tok.chars)!r}')
    if model.cfg.model == 'gpt' and '_' in head.rstrip('_'):
        raise ValueError(f'pattern {pattern!r}: a GPT reads left to right, so it can only '
                         'continue a fixed beginning (ka*, ka__); filling a blank before a '
                         'fixed letter takes diffusion')
    ids = [[tok.MASK if c == '_' else tok.ids[c] for c in part] for part in (head, tail)]
    return ids[0], ids[1] if star else None


def pattern_lengths(model, head, tail):
    """p(n | pattern) ∝ p(n) · p(the pattern's letters where length n puts them | n). The
    second factor by the chain rule through the model's own conditionals: the fixed letters
    revealed left to right, one forward pass each (masked diffusion models every order)."""
    mask_id, logs = model.tok.MASK, []  # log p(n) + log p(letters | n), for each n
    for n, p_n in enumerate(model.lengths):
        gap = n - len(head) - len(tail)
        if gap < 0 or p_n == 0:
            logs.append(-math.inf)
            continue
        target, seq = head + [mask_id] * gap + tail, [mask_id] * n + [model.tok.PAD]
        logs.append(math.log(p_n))
        for i in [i for i, x in enumerate(target) if x != mask_id]:
            logs[-1] -= token_nll(model.logits(seq, [i])[0], target[i], model.outputs)
            seq[i] = target[i]
    odds = [math.exp(x - max(logs)) for x in logs]  # normalised from the largest: no underflow
    return [p / sum(odds) for p in odds]


def starting_point(model, how, rng):
    """(tokens, candidates, drawn): where the reverse process starts, what each position may
    become, whether a length was drawn. A length-first model draws n from p(length | pattern),
    and starts from n blanks (the pattern's letters in place) and the end; a GPT or --padding
    model from the block, its end still to be found."""
    tok, (head, tail) = model.tok, how.pattern or ([], [])  # no pattern: '*', any name
    letters = list(range(len(tok.chars)))
    if model.cfg.text:  # a window of text: its characters and blanks, nothing else
        return list(head), [letters] * len(head), False
    if not model.length_first:
        rest = model.cfg.block_size - len(head)
        seq = head + [tok.MASK if tail is not None else tok.PAD] * rest
        candidates = [letters] * len(head) + [letters + [tok.PAD]] * rest
        if model.cfg.model == 'gpt':  # its start token takes a position: the last is the end
            candidates[-1] = [tok.PAD]
        return seq, candidates, False
    n = len(head) if tail is None else rng.choices(
        range(len(model.lengths)), how.lengths or pattern_lengths(model, head, tail))[0]
    seq = head + [tok.MASK] * (n - len(head) - len(tail or [])) + (tail or []) + [tok.PAD]
    return seq, [letters] * n + [[tok.PAD]], tail is not None


def noise_at(i, steps):
    """The cosine schedule: t_i = cos(π/2 · (1 - i/steps)), 1 at i = steps, 0 at i = 0. It
    decides few positions while little is known and speeds up as letters fill in."""
    return math.cos(math.pi / 2 * (1 - i / steps))


def masked_counts(n0, steps):
    """Entry i: how many of n0 positions are still masked when step i starts, round(n0 · t_i)."""
    return [round(n0 * noise_at(i, steps)) for i in range(steps + 1)]


def draw(logits, candidates, temperature, rng):
    """A token drawn from softmax(logits / temperature) over the candidates, and a confidence.
    One Gumbel-max draw gives both: token = argmax_c (log p_c + T·g_c), g_c standard Gumbel
    noise, confidence = the winning score: log p(token) as T falls to 0 (LLaDA). At T = 1 the
    max of Gumbel-shifted log-probabilities is itself a standard Gumbel, independent of which
    token won and of every other position: re-masking the least sure is then re-masking at
    random, as the theory's reverse process does. Between, MaskGIT's noisy confidence."""
    scores = [logits[c] for c in candidates]
    log_total = logsumexp(scores)
    # standard Gumbel noise: -log(-log u), u uniform in (0, 1) (u = 0 once in 2^53: again)
    perturbed = [s - log_total - temperature * math.log(-math.log(rng.random() or rng.random()))
                 for s in scores]
    best = max(range(len(candidates)), key=perturbed.__getitem__)
    return candidates[best], perturbed[best]


def draw_length(model, seq, candidates, rng):
    """Where the name ends, drawn from the model's odds (at T = 1) before any letter. PADs only
    follow PADs, so P(PAD at i), every open position masked, is the model's P(ended by i): a
    cumulative distribution (kept from dipping: each P(PAD) is its own output); the end is the
    first i where it passes a uniform u. From it on, open positions are PAD; before, letters."""
    pad, mask = model.tok.PAD, model.tok.MASK
    blanks = [i for i, tok in enumerate(seq) if tok == mask and pad in candidates[i]]
    cdf, end, u = 0.0, len(seq), rng.random()  # end = len(seq): no PAD, every position a letter
    for i, logits in zip(blanks, model.logits(seq, blanks)):
        cdf = max(cdf, math.exp(logits[pad] - logsumexp([logits[c] for c in candidates[i]])))
        if u < cdf:
            end = i
            break
    seq = [pad if i in blanks and i >= end else tok for i, tok in enumerate(seq)]
    return seq, [[c for c in cs if c != pad] if i in blanks and i < end else cs
                 for i, cs in enumerate(candidates)]


def reverse_step(model, seq, candidates, keep_masked, temperature, remask, rng):
    """One reverse step: predict every MASK, then put MASK back on `keep_masked` of them, the
    least sure ('confidence': MaskGIT, LLaDA) or a random few ('random', as in the theory)."""
    masked = [i for i, tok in enumerate(seq) if tok == model.tok.MASK]
    logits = model.logits(seq, masked)
    guesses = [draw(lg, candidates[i], temperature, rng) for i, lg in zip(masked, logits)]
    if remask == 'confidence':
        remasked = set(sorted(range(len(masked)), key=lambda j: guesses[j][1])[:keep_masked])
    else:
        remasked = set(rng.sample(range(len(masked)), keep_masked))
    kept = {i: guesses[j][0] for j, i in enumerate(masked) if j not in remasked}
    return [kept.get(i, tok) for i, tok in enumerate(seq)]


def sample_tokens(model, rng, how, trace=None):
    """The reverse process: from blanks (MASK) to a finished name. The length first; then after
    step i, masked_counts(n0, steps)[i - 1] of the n0 blanks are still masked (steps that would
    not change the count are skipped), at T = temperature · (T_end + (T_start - T_end) · t).
    With 64 steps and at most 15 blanks no step decides two letters: one letter at a time, in
    the model's order of confidence; fewer steps decide several in one forward pass. trace, if
    a list, receives (step, t, T, tokens) after the length and after every step."""
    if how.order == 'left-to-right' or model.cfg.model == 'gpt':
        return sample_left_to_right(model, rng, how, trace)
    seq, candidates, drawn = starting_point(model, how, rng)
    if model.cfg.padding and how.length == 'first':  # --padding: the end first, from odds
        before, (seq, candidates) = seq, draw_length(model, seq, candidates, rng)
        drawn = seq != before
    if trace is not None and drawn:
        trace.append((how.steps, 1.0, 1.0, seq))  # the length, drawn at T = 1
    counts = masked_counts(seq.count(model.tok.MASK), how.steps)
    for i in range(how.steps, 0, -1):
        if counts[i - 1] == counts[i]:
            continue
        t = noise_at(i, how.steps)
        T = how.temperature * (how.temp_end + (how.temp_start - how.temp_end) * t)
        seq = reverse_step(model, seq, candidates, counts[i - 1], T, how.remask, rng)
        if trace is not None:
            trace.append((i, t, T, seq))
    return seq


def sample_left_to_right(model, rng, how, trace=None):
    """Position 0, then 1, ...: each drawn at how.temperature from the model's odds given the
    positions before it, until the end (after a PAD no letter may follow). GPT's sampler; for
    diffusion, one fixed order of unmasking, the positions to the right still MASK."""
    tok, gpt = model.tok, model.cfg.model == 'gpt'
    seq, candidates, _ = starting_point(model, how, rng)
    size = len(seq)
    for i in range(size):
        if seq[i] == tok.MASK:  # GPT reads the start token and the tokens so far
            logits = model.logits([tok.MASK] + seq[:i] if gpt else seq, [i])[0]
            seq[i] = draw(logits, candidates[i], how.temperature, rng)[0]
            if seq[i] == tok.PAD:
                seq[i:] = [tok.PAD] * (size - i)
            if trace is not None:  # t: the share of positions still to come
                trace.append((i + 1, 1 - i / size, how.temperature, list(seq)))
        if seq[i] == tok.PAD:
            return seq
    return seq


# --- The ELBO: how well the model explains a name, in nats -----------------------------------

def nelbo(model, tokens, rng, seen=0):
    """An unbiased estimate of one name's negative ELBO, an upper bound on -log p(name): the
    length's -log p(n), then for absorbing diffusion over its L erasable positions (MDLM, RADD)
    the continuous-time bound, exactly

        NELBO(x) = Σ_{k=1..L} 1/k · E_M [ Σ_{i∈M} -log p(x_i | x with the positions M masked) ]

    with M a uniformly random set of k positions. Where 1/k comes from: at level t exactly k
    of L positions are masked with probability C(L,k)·t^k·(1-t)^(L-k), any k of them alike, and
    ∫_0^1 (1/t)·C(L,k)·t^k·(1-t)^(L-k) dt = C(L,k)·(k-1)!·(L-k)!/L! = 1/k (a Beta integral).
    The first k positions of one random order are such a set, for every k at once: L forward
    passes per estimate. With seen > 0, the bound for the rest given the first `seen` tokens."""
    positions = erasable(model, tokens)[seen:]
    order = rng.sample(positions, len(positions))
    return length_nll(model, tokens) + sum([erased_nll(model, tokens, sorted(order[:k])) / k
                                            for k in range(1, len(order) + 1)])


def nelbo_one_pass(model, tokens, rng):
    """A cheaper unbiased estimate in one forward pass (RADD): k uniform in 1..L, then
    L/k · Σ_{i∈M} -log p(x_i | x, M masked) for one random k-subset M. Noisier per name."""
    positions = erasable(model, tokens)
    k = rng.randint(1, len(positions))
    erased = sorted(rng.sample(positions, k))
    return length_nll(model, tokens) + len(positions) / k * erased_nll(model, tokens, erased)


def left_to_right_nll(model, tokens):
    """-log p(tokens) exactly, in one order, by the chain rule through the model's conditionals:
    the length's -log p(n), then each erasable position from the ones before it, the later ones
    masked (as a GPT scores; the NELBO averages over every order)."""
    L, mask_id = len(erasable(model, tokens)), model.tok.MASK  # erasable: the first L
    return length_nll(model, tokens) + sum([token_nll(model.logits(
        tokens[:i] + [mask_id] * (L - i) + tokens[L:], [i])[0], tokens[i], model.outputs)
        for i in range(L)])


# --- Adam ------------------------------------------------------------------------------------

class Adam:
    """Adam (Kingma & Ba, 2015): each parameter's step is its gradient's running average (m)
    over the root of its squared gradient's running average (v), both bias-corrected. The tied
    wte is in the list once, so it gets one pair of moments and one update per step."""

    def __init__(self, values, cfg):
        self.values = values
        self.beta1, self.beta2, self.eps = cfg.beta1, cfg.beta2, cfg.adam_eps
        self.m, self.v = [0.0] * len(values), [0.0] * len(values)  # the two running averages
        self.t = 0  # steps taken, for the bias correction

    def step(self, grads, lr):
        b1, b2, eps, sqrt = self.beta1, self.beta2, self.eps, math.sqrt  # locals: 25% faster
        self.t += 1
        self.m = [b1 * m + (1 - b1) * g for m, g in zip(self.m, grads)]
        self.v = [b2 * v + (1 - b2) * g * g for v, g in zip(self.v, grads)]
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


# --- Training and sampling -------------------------------------------------------------------

class Batches:
    """The training examples, step by step, each step's following from its number alone (a
    resumed run sees the same ones): names from each epoch's shuffle, seeded by (seed, epoch),
    or windows of block_size characters of running text at offsets seeded by (seed, step)."""

    def __init__(self, data, cfg):
        self.data, self.cfg = data, cfg
        self.epoch, self.order = None, None

    def at(self, step):
        size, batch = self.cfg.block_size, self.cfg.batch_size
        if self.cfg.text:
            rng = random.Random(f'{self.cfg.seed}:windows:{step}')
            return [self.data[i:i + size] for i in
                    [rng.randint(0, len(self.data) - size) for _ in range(batch)]]
        names = []
        for j in range(step * batch, (step + 1) * batch):
            epoch, k = divmod(j, len(self.data))
            if epoch != self.epoch:
                self.epoch, self.order = epoch, list(self.data)
                random.Random(f'{self.cfg.seed}:epoch:{epoch}').shuffle(self.order)
            names.append(self.order[k])
        return names


def name_loss(model, item):
    """One training name's loss, item = (tokens, t, seed): diffusion's at level t, or GPT's."""
    tokens, t, seed = item
    return (gpt_loss(model, tokens) if model.cfg.model == 'gpt' else
            diffusion_loss(model, tokens, t, random.Random(seed)))


def name_gradient(model, values, item):
    """(loss, gradient aligned with `values`) of one training name, computed from zero."""
    with Tape() as tape:  # records the graph as it is built: backward's order, for free
        loss = name_loss(model, item)
    loss.backward(tape)
    grads = [p.grad for p in values]
    for p in values:
        p.grad = 0.0
    return loss.data, grads


def train_step(model, adam, names, step, gradients=None):
    """One optimiser step: noise -> loss -> backward -> Adam; returns the batch's mean loss.
    gradients(items) yields name_gradient's result for each item in order (by default computed
    here); added in batch order, the sum is the same bit for bit whoever computed them."""
    rng = random.Random(f'{model.cfg.seed}:step:{step}')  # each name: tokens, t, a mask seed
    items = [(model.encode(name), t, rng.getrandbits(64))
             for name, t in zip(names, noise_levels(rng, model.cfg.t_min, len(names)))]
    results = gradients(items) if gradients else (name_gradient(model, adam.values, item)
                                                  for item in items)
    loss, total = 0.0, [0.0] * len(adam.values)
    for one_loss, grads in results:
        loss += one_loss
        total = [a + g for a, g in zip(total, grads)]
    loss /= len(items)
    if not math.isfinite(loss + sum(map(abs, total))):
        raise ArithmeticError(f'the loss is {loss}, its gradient {sum(map(abs, total))}')
    adam.step([g / len(items) for g in total], learning_rate(model.cfg, step))
    return loss


def train(cfg, data, log_every=100):
    """A new model trained on `data` with the settings in cfg, one step after another: a list
    of names, or with cfg.text one string of running text."""
    lengths = None if cfg.text else length_odds(data, cfg.block_size)
    model = Model.new(cfg, Tokenizer.from_names(data), lengths)
    adam, batches = Adam(flatten(model.params), cfg), Batches(data, cfg)
    for step in range(cfg.steps):
        loss = train_step(model, adam, batches.at(step), step)
        if log_every and (step + 1) % log_every == 0:
            print(f'step {step + 1}/{cfg.steps}  loss {loss:.3f}')
    return model


def sample(model, num=20, seed=0, how=None):
    """num new names, each from its own random generator drawn from `seed`."""
    frozen, how, rng = model.frozen(), how or Sampling(), random.Random(f'{seed}:sample')
    if how.pattern and how.pattern[1] is not None and model.length_first:  # once, not per name
        how = replace(how, lengths=pattern_lengths(frozen, *how.pattern))
    return [model.tok.decode(sample_tokens(frozen, random.Random(rng.getrandbits(64)), how))
            for _ in range(num)]


def write(model, prompt, n, rng, how, context=None, trace=False):
    """n characters of running text after `prompt` (token ids), block after block: each block
    keeps the last `context` characters visible (by default three quarters of the window: the
    more in view, the surer each guess), and the reverse process fills the rest (LLaDA's
    semi-autoregressive blocks). Yields each block's new tokens and, if asked, its trace. With
    context = block_size - 1 a block is one character: a GPT's sliding window."""
    text, context = list(prompt), context or 3 * model.cfg.block_size // 4
    while n > 0:
        seen = text[max(0, len(text) - min(context, model.cfg.block_size - 1)):]
        blanks = seen + [model.tok.MASK] * min(model.cfg.block_size - len(seen), n)
        steps = [] if trace else None
        fresh = sample_tokens(model, rng, replace(how, pattern=(blanks, None)), steps)[len(seen):]
        text += fresh
        n -= len(fresh)
        yield fresh, steps


if __name__ == '__main__':  # the lab: the command line, processes, checkpoints (lab.py)
    import sys
    import lab
    sys.exit(lab.main())
