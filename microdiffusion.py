"""microdiffusion: masked (absorbing-state) text diffusion on names, in pure Python.

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
and the transformer only ever reads a name's letters and its end.

This file is the lesson, in order: configuration; tokenizer and p(length); parameters; the
transformer; the Model the rest calls; the noise and the loss; the sampler; the ELBO; Adam;
training and `sample`. variants/ subclasses the Model (a GPT, running text, the padded block,
an MLP); `python microdiffusion.py` runs the lab (lab/): it trains a model, prints 20 names.
"""

import math
import random
from dataclasses import dataclass, replace

from value import Tape, Value, dot, logsumexp, matmul, relu_matmul, softmax_average, vsum


@dataclass
class Config:
    # --- the transformer (a checkpoint records these: they fix the shape of the parameters) ---
    n_embd: int = 16        # numbers per position: room for a letter, its place, its context
    n_head: int = 4         # attention heads, each n_embd // n_head = 4 numbers wide
    n_layer: int = 2        # layers: the first gathers clues from the letters, the second combines
    block_size: int = 16    # positions: the longest name in names.txt (15) and its end
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


# --- Tokenizer and p(length): a name is its letters, then PAD -------------------------------

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


def name_of(line):
    """A line of a names file as a name, stripped; a byte-order mark (U+FEFF) is no letter."""
    return line.replace('\ufeff', '').strip()


def load_names(path):
    """The names in a UTF-8 file, one a line, blank lines skipped (the lab checks more)."""
    with open(path, encoding='utf-8') as f:
        return [name for name in map(name_of, f) if name]


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


# --- The transformer: tokens in, logits out at the positions asked about ---------------------
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
        if causal:  # (a GPT's) query i reads only positions 0..i (the first i + 1 values)
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


def transformer(params, cfg, tokens, positions, causal=False):
    """Token ids in; out, for each of `positions`, its logits: one number per token id."""
    wte, wpe = params['wte'], params['wpe']
    xs = [rmsnorm([t + p for t, p in zip(wte[tok], wpe[i])]) for i, tok in enumerate(tokens)]
    for layer in range(cfg.n_layer):
        prefix = f'layer{layer}.'
        # The last layer's outputs only feed logits, so it computes them only where asked.
        queries = positions if layer == cfg.n_layer - 1 else range(len(tokens))
        xs = attention(params, prefix, xs, queries, cfg.n_head, causal)
        xs = mlp(params, prefix, xs)
    return matmul(wte, xs)  # weight tying: the logit of token v is x · wte[v]


# --- The Model: what the algorithm below calls -----------------------------------------------

class Model:
    """One thing to pass around: the configuration, the vocabulary, the parameters, p(length).
    Its methods are the steps where a variant differs (variants/ subclasses it). `outputs` are
    what a prediction may be in every softmax; a sampler's `candidates` narrow them a position."""

    shapes = staticmethod(transformer_shapes)  # the parameters' names and shapes
    count_lengths = staticmethod(length_odds)  # p(length), counted on the training names

    def __init__(self, cfg, tok, params, lengths=None):
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f'n_embd {cfg.n_embd} is not a multiple of n_head {cfg.n_head}: '
                             'each head takes n_embd / n_head of the numbers')
        self.cfg, self.tok, self.params = cfg, tok, params  # p(length): if not given, all alike
        self.lengths = self.count_lengths((), cfg.block_size) if lengths is None else lengths
        self.outputs = list(range(len(tok.chars)))  # a letter: never MASK, nor the end

    @classmethod
    def new(cls, cfg, tok, names=()):  # fresh weights from cfg.seed; p(length) from names
        shapes = cls.shapes(cfg, tok.vocab_size)
        return cls(cfg, tok, init_params(shapes, cfg.init_std, random.Random(cfg.seed)),
                   cls.count_lengths(names, cfg.block_size))

    def frozen(self):  # the same model on plain floats: no graph, to sample and to score
        return type(self)(self.cfg, self.tok, as_floats(self.params), self.lengths)

    @classmethod
    def longest(cls, cfg):  # (of the class: the lab asks before there is a model)
        return cfg.block_size - 1  # the most letters a name may have: the block holds its end

    def encode(self, name):
        return self.tok.encode(name, len(name) + 1)  # a name's tokens: its letters, its end

    def logits(self, tokens, positions):
        return transformer(self.params, self.cfg, tokens, positions)

    def erasable(self, tokens):
        return list(range(len(tokens) - 1))  # where the forward process erases: not the end

    def length_nll(self, tokens):
        return -math.log(self.lengths[len(tokens) - 1])  # -log p(length), p(name)'s 1st factor

    def loss(self, tokens, t, rng):
        return diffusion_loss(self, tokens, t, rng)

    def pattern_problem(self, head, tail):
        return None  # why it cannot fill a pattern (parse_pattern): it fills any

    def starting_point(self, how, rng, trace=None):
        return start_with_length(self, how, rng, trace)

    def fills_left_to_right(self, how):
        """Whether sampling fills one position after another (else in any order)."""
        return how.order == 'left-to-right'

    def batches(self, names):
        return Batches(names, self.cfg)


# --- The forward process and the loss --------------------------------------------------------

def noise_levels(rng, t_min, n):
    """n noise levels t, each log-uniform on [t_min, 1]: as likely in [0.2, 0.45] as in [0.45, 1].
    A batch's levels are spread evenly from one random offset (MDLM's low-discrepancy sampler),
    so every batch mixes light and heavy noise. Why log-uniform: see diffusion_loss."""
    offset = rng.random()
    spread = [(i + offset) / n for i in range(n)]
    rng.shuffle(spread)
    return [math.exp(math.log(t_min) * (1 - u)) for u in spread]


def erase(positions, t, rng):
    """The forward process at noise level t: each position erased with probability t."""
    return [i for i in positions if rng.random() < t]


def token_nll(logits, target, outputs):
    """-log p(target) under a softmax over the tokens the model may predict (model.outputs):
    never MASK (MDLM's SUBS parameterisation), so its logit is left out of every softmax."""
    return logsumexp([logits[v] for v in outputs]) - logits[target]


def erased_nll(model, tokens, erased):
    """Σ -log p(x_i) over the positions `erased`, with exactly those positions masked."""
    noisy = [model.tok.MASK if i in erased else tok for i, tok in enumerate(tokens)]
    logits = model.logits(noisy, erased)
    return vsum([token_nll(lg, tokens[i], model.outputs) for i, lg in zip(erased, logits)])


def diffusion_loss(model, tokens, t, rng):
    """One name's loss at noise level t: erase letters, predict them, and add up -log p of
    the erased ones.

    Why this estimates the NELBO (MDLM). With f(t) = E[Σ_{erased i} -log p(x_i | noisy)] at
    level t, the continuous-time bound is ∫_0^1 f(t)/t dt. Training covers t in [t_min, 1]:
    drawing t from q(t) = 1/(t · log(1/t_min)), the log-uniform density, and weighing f(t) by
    (1/t)/q(t) = log(1/t_min) is importance sampling, so log(1/t_min) times this sum is an
    unbiased estimate of ∫_{t_min}^1 f(t)/t dt: the NELBO's t >= t_min share, in nats per name,
    below the whole NELBO that validation reports (which adds -log p(length) too). A mask that
    erased nothing is drawn again, since it teaches nothing; weighing the sum by the chance
    that a mask is not empty, 1 - (1 - t)^L, keeps the estimate unbiased."""
    positions = model.erasable(tokens)
    erased = []
    while not erased:
        erased = erase(positions, t, rng)
    weight = math.log(1 / model.cfg.t_min) * (1 - (1 - t) ** len(positions))
    return erased_nll(model, tokens, erased) * weight


# --- The reverse process: the sampler --------------------------------------------------------

@dataclass
class Sampling:
    """How to run the reverse process: by default several letters a pass (4 steps), mended by
    the loop; at the same share of new names, 1.1 nats better than 64 steps (MEASUREMENTS.md)."""
    steps: int = 4              # reverse steps on the cosine schedule (idle ones are skipped)
    temp_start: float = 1.0     # at t = 1 the model's own odds, re-masking at random (see draw)
    temp_end: float = 0.4       # at t = 0, colder: the last letters fit the first ones
    temperature: float = 1.4    # scales both, and the loop's: from 1.4 down to 0.56
    remask: str = 'confidence'  # which guesses go back under MASK: 'confidence' or 'random'
    order: str = 'any'          # or 'left-to-right', one position at a time
    pattern: tuple = None       # (head, tail) from parse_pattern; None: any name
    lengths: list = None        # p(length | pattern), from pattern_lengths (computed once)
    loop_passes: int = 16       # ReMDM's loop (remask_loop): the passes it makes; 0: none
    loop_at: int = 2            # it starts once at most this many letters are still masked
    loop_remask: int = 2        # decided letters put back under MASK a pass, at random
    loop_temperature: float = 0.4  # its T, times `temperature` (where the schedule ends)


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
    step i, masked_counts(n0, steps)[i - 1] of the n0 blanks are still masked (idle steps are
    skipped), at T = temperature · (temp_end + (temp_start - temp_end) · t). With 64 steps and
    at most 15 blanks no step decides two letters: one a forward pass, in the model's order of
    confidence; fewer decide several at once. trace, if a list, receives (step, t, T, tokens)
    after the length, every step and every pass of the loop."""
    seq, candidates = model.starting_point(how, rng, trace)
    if model.fills_left_to_right(how):
        return fill_left_to_right(model, seq, candidates, how.temperature, rng, trace)
    blanks = [i for i, tok in enumerate(seq) if tok == model.tok.MASK]  # never a pattern's letter
    counts, looped = masked_counts(len(blanks), how.steps), not how.loop_passes
    for i in range(how.steps, 0, -1):
        if counts[i - 1] == counts[i]:
            continue
        t = noise_at(i, how.steps)
        T = how.temperature * (how.temp_end + (how.temp_start - how.temp_end) * t)
        seq = reverse_step(model, seq, candidates, counts[i - 1], T, how.remask, rng)
        if trace is not None:
            trace.append((i, t, T, seq))
        if not looped and counts[i - 1] <= how.loop_at:  # the loop, once, then the rest
            seq, looped = remask_loop(model, seq, candidates, blanks, how, rng, trace, i, t), True
    return seq


def remask_loop(model, seq, candidates, blanks, how, rng, trace, i, t):
    """ReMDM's loop (Wang et al., 2025): loop_passes times, put loop_remask decided letters
    (never a pattern's own) back under MASK at random and predict every MASK again, as many left
    masked as before: a letter decided early, little known, gets a look with its neighbours."""
    masked, T = seq.count(model.tok.MASK), how.temperature * how.loop_temperature
    for _ in range(how.loop_passes):
        decided = [j for j in blanks if seq[j] != model.tok.MASK]
        again = set(rng.sample(decided, min(how.loop_remask, len(decided))))
        seq = [model.tok.MASK if j in again else tok for j, tok in enumerate(seq)]
        seq = reverse_step(model, seq, candidates, masked, T, how.remask, rng)
        if trace is not None:
            trace.append((i, t, T, seq))
    return seq


def fill_left_to_right(model, seq, candidates, temperature, rng, trace=None):
    """Position 0, then 1, ...: each MASK drawn at `temperature` from the model's odds, the
    positions after it still masked (a GPT reads only those before it), until the end: after a
    PAD no letter may follow. One fixed order of unmasking, where diffusion may take any."""
    tok, size, seq = model.tok, len(seq), list(seq)  # (a copy: the trace keeps the start)
    for i in range(size):
        if seq[i] == tok.MASK:
            seq[i] = draw(model.logits(seq, [i])[0], candidates[i], temperature, rng)[0]
            if seq[i] == tok.PAD:
                seq[i:] = [tok.PAD] * (size - i)
            if trace is not None:  # t: the share still masked when position i was drawn
                trace.append((i + 1, 1 - i / size, temperature, list(seq)))
        if seq[i] == tok.PAD:
            break
    return seq


# --- Where the reverse process starts: the length, and patterns ------------------------------

def start_with_length(model, how, rng, trace=None):
    """(tokens, candidates): where the reverse process starts and what each position may
    become. The length n is drawn first, from p(length | pattern) (a step of the trace); then
    n blanks, the pattern's letters in place, and the end."""
    tok, (head, tail) = model.tok, how.pattern or ([], [])  # no pattern: '*', any name
    n = len(head) if tail is None else rng.choices(
        range(len(model.lengths)), how.lengths or pattern_lengths(model, head, tail))[0]
    seq = head + [tok.MASK] * (n - len(head) - len(tail or [])) + (tail or []) + [tok.PAD]
    if trace is not None and tail is not None:
        trace.append((how.steps, 1.0, 1.0, seq))  # the length, drawn at T = 1
    return seq, [model.outputs] * n + [[tok.PAD]]


def parse_pattern(pattern, model):
    """A pattern -> (head, tail): letters are fixed, '_' is one letter to fill in (MASK), and
    one '*' stands for any number of letters, 0 included, splitting head from tail (tail is
    None without one). 'm_r__' is five letters m?r??, 'ka*' starts "ka", '*lyn' ends "lyn"."""
    tok, longest = model.tok, model.longest(model.cfg)
    head, star, tail = pattern.partition('*')
    if not pattern:
        raise ValueError("the pattern is empty; use '*' for any name")
    if '*' in tail:
        raise ValueError(f"pattern {pattern!r}: '*' may stand only once")
    if len(head + tail) > longest:
        raise ValueError(f'pattern {pattern!r} has {len(head + tail)} positions; '
                         f'names have at most {longest}')
    unknown = sorted({c for c in head + tail if c != '_' and c not in tok.ids})
    if unknown:
        raise ValueError(f'pattern {pattern!r}: {"".join(unknown)!r} not in the vocabulary '
                         f'{"".join(tok.chars)!r}')
    head, tail = [[tok.MASK if c == '_' else tok.ids[c] for c in part] for part in (head, tail)]
    problem = model.pattern_problem(head, tail if star else None)
    if problem:
        raise ValueError(f'pattern {pattern!r}: {problem}')
    return head, tail if star else None


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
    positions = model.erasable(tokens)[seen:]
    order = rng.sample(positions, len(positions))
    return model.length_nll(tokens) + sum([erased_nll(model, tokens, sorted(order[:k])) / k
                                           for k in range(1, len(order) + 1)])


def nelbo_one_pass(model, tokens, rng):
    """A cheaper unbiased estimate in one forward pass (RADD): k uniform in 1..L, then
    L/k · Σ_{i∈M} -log p(x_i | x, M masked) for one random k-subset M. Noisier per name."""
    positions = model.erasable(tokens)
    k = rng.randint(1, len(positions))
    erased = sorted(rng.sample(positions, k))
    return model.length_nll(tokens) + len(positions) / k * erased_nll(model, tokens, erased)


def left_to_right_nll(model, tokens):
    """-log p(tokens) exactly, in one order, by the chain rule through the model's conditionals:
    the length's -log p(n), then each erasable position from the ones before it, the later ones
    masked (as a GPT scores; the NELBO averages over every order)."""
    L, mask_id = len(model.erasable(tokens)), model.tok.MASK  # erasable: the first L
    return model.length_nll(tokens) + sum([token_nll(model.logits(
        tokens[:i] + [mask_id] * (L - i) + tokens[L:], [i])[0], tokens[i], model.outputs)
        for i in range(L)])


# --- Adam ------------------------------------------------------------------------------------

class Adam:
    """Adam (Kingma & Ba, 2015): each parameter's step is its gradient's running average (m)
    over the root of its squared gradient's running average (v), both bias-corrected."""

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
    """The training names, step by step, each step's following from its number alone (a
    resumed run sees the same ones): names from each epoch's shuffle, seeded by (seed, epoch)."""

    def __init__(self, names, cfg):
        self.names, self.cfg = names, cfg
        self.epoch, self.order = None, None

    def at(self, step):
        batch, names = self.cfg.batch_size, []
        for j in range(step * batch, (step + 1) * batch):
            epoch, k = divmod(j, len(self.names))
            if epoch != self.epoch:
                self.epoch, self.order = epoch, list(self.names)
                random.Random(f'{self.cfg.seed}:epoch:{epoch}').shuffle(self.order)
            names.append(self.order[k])
        return names


def name_gradient(model, values, item):
    """(loss, gradient aligned with `values`) of one training name, item = (tokens, t, seed),
    computed from zero."""
    tokens, t, seed = item
    with Tape() as tape:  # records the graph as it is built: backward's order, for free
        loss = model.loss(tokens, t, random.Random(seed))
    loss.backward(tape)
    grads = [p.grad for p in values]
    for p in values:
        p.grad = 0.0
    return loss.data, grads


def train_step(model, adam, names, step, gradients=None):
    """One optimiser step: noise -> loss -> backward -> Adam; returns the batch's mean loss.
    Each name's gradient is computed here, one after another, unless `gradients(items)` is
    given (the lab's, spreading them over processes) to yield the same in the same order;
    added in batch order, the sum is the same bit for bit wherever they were computed."""
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


def train(cfg, names, log_every=100, kind=Model):
    """A new model of class `kind` (Model, or a variant's) trained on `names` with the
    settings in cfg, one step after another."""
    model = kind.new(cfg, Tokenizer.from_names(names), names)
    adam, batches = Adam(flatten(model.params), cfg), model.batches(names)
    for step in range(cfg.steps):
        loss = train_step(model, adam, batches.at(step), step)
        if log_every and (step + 1) % log_every == 0:
            print(f'step {step + 1}/{cfg.steps}  loss {loss:.3f}')
    return model


def prepared(model, how):
    """`how`, with p(length | pattern) worked out once for all the names it will make."""
    if how.pattern and how.pattern[1] is not None and model.lengths is not None:
        return replace(how, lengths=pattern_lengths(model, *how.pattern))
    return how


def sample(model, num=20, seed=0, how=None):
    """num new names, each from its own random generator drawn from `seed`."""
    frozen, rng = model.frozen(), random.Random(f'{seed}:sample')
    how = prepared(frozen, how or Sampling())
    return [model.tok.decode(sample_tokens(frozen, random.Random(rng.getrandbits(64)), how))
            for _ in range(num)]


if __name__ == '__main__':  # the lab: the command line, processes, checkpoints (lab/)
    import sys
    sys.modules['microdiffusion'] = sys.modules[__name__]  # the lab imports this run of the file
    import lab
    sys.exit(lab.main())
