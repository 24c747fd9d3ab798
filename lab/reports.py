"""What the lab measures and reports: samples against the data, held-out names' NELBO (eval),
the forward process on one name (forward), and speed (bench)."""

import collections
import math
import os
import random
import statistics
import sys
import time

import microdiffusion as md
import variants
from lab.checkpoint import load_checkpoint
from lab.data import read_names, read_text, split_data, training_split, windows
from lab.terminal import Progress, UserError, marks, out, show, unsafe
from lab.training import new_model
from lab.workers import Workers, enough, nelbo_estimates
from value import topological_order


def sample_report(samples, train_names, held_out, block_size, passes=()):
    """Lines describing sampled names against the data: new, unique, remembered, their
    lengths, and the forward passes they took."""
    train, held, data = set(train_names), set(held_out), train_names + held_out
    new = [s for s in samples if s not in train]

    def histogram(names):
        counts = collections.Counter(map(len, names))
        return [counts[length] / len(names) for length in range(block_size + 1)]
    mine, theirs = histogram(samples), histogram(data)
    tv = sum(abs(a - b) for a, b in zip(mine, theirs)) / 2
    return [f'{len(samples)} names: {len(new) / len(samples):.1%} new (not in the training data; '
            f'{sum(1 for s in new if s in held)} of them are held-out real names), '
            f'{len(set(samples)) / len(samples):.1%} unique',
            memorisation(samples, train, held)] + (
            [f'forward passes a name: {statistics.fmean(passes):.2f}'] if passes else []) + [
            f'mean length {statistics.fmean(map(len, samples)):.2f} (data '
            f'{statistics.fmean(map(len, data)):.2f}), length histogram total variation {tv:.3f}',
            'length    data  samples   (each # is 2% of names)'] + [
        f'{length:6d}  {a:6.1%}  {b:6.1%}   {"#" * round(a * 50):<20s}|{"#" * round(b * 50)}'
        for length, (a, b) in enumerate(zip(theirs, mine)) if a or b]


def memorisation(samples, train, held):
    """How much more often the training names come out than real names the model never saw,
    each per name of its set (distinct names): near 1 for a model that generalises, far above
    1 for one that copies; too few hits of either set and it tells nothing."""
    made = set(samples)
    hits = len(made & train), len(made & held)
    counts = (f'{hits[0]:,} of the {len(train):,} training names came out, {hits[1]:,} of '
              f'the {len(held):,} held-out ones')
    if min(hits) < 10:
        return f'memorisation: too few hits to tell ({counts})'
    ratio = (hits[0] / len(train)) / (hits[1] / len(held))
    return f'memorisation: {ratio:.2f} ({counts}; 1: as often as real names it never saw)'


def score_kind(model):
    """How a model that did not make them scores names: a GPT's exact -log p, or the NELBO."""
    return 'exact' if isinstance(model, variants.GPT) else 'random orders'


def score_line(model, names, label, workers):
    """The mean score of names under a model that did not make them; names it cannot hold are
    left out and counted."""
    fit = [n for n in names if len(n) <= model.longest(model.cfg) and
           set(n) <= set(model.tok.chars)]
    if not fit:
        return f'{label}: none it can score'
    mean = statistics.fmean(nelbo_estimates(model, fit, 0, workers, score_kind(model)))
    left_out = f' ({len(names) - len(fit)} it cannot hold left out)' * (len(fit) < len(names))
    return f'{label} {mean:.2f} nats/name{left_out}'


def run_eval(args):
    model, state = load_checkpoint(args.checkpoint)
    gpt, text = isinstance(model, variants.GPT), isinstance(model, variants.Text)
    kind, title, how = (('exact' if gpt else 'left-to-right',
                         f'NLL ({"GPT" if gpt else "left to right"}, exact)',
                         'exact, by the chain rule') if gpt or args.order == 'left-to-right' else
                        ('random orders', 'NELBO', f'one random order each, seed {args.seed}'))
    cfg, unit, seen = model.cfg, 'window' if text else 'name', args.context or 0
    if args.context is not None and not text:
        raise UserError(f'--context: scores what follows the start of a window of running '
                        f'text; {args.checkpoint} is a model of names')
    if args.context is not None and not (seen < cfg.block_size and kind != 'left-to-right'):
        raise UserError(f'--context {seen}: scores what follows the start of a window of '
                        f'running text, fewer than {cfg.block_size} characters, in any order')
    if seen:
        how += f'; each window\'s last {cfg.block_size - seen} characters given its first {seen}'
    if args.data:  # a text file is scored whole, in windows
        sets = [(path, windows(read_text(path), cfg.block_size) if text else
                 read_names(path, model.longest(cfg))) for path in args.data]
    else:
        trained, held_out, path = training_split(model, state, None, args.checkpoint)
        if not held_out:
            raise UserError(f'{args.checkpoint}: nothing of its data was held out; pass --data')
        sets = [(f'{os.path.basename(path)} ' + ('held-out end' if text else
                                                 'validation split'), held_out)]
    vocabulary = set(model.tok.chars)
    for label, names in sets:
        if not names:
            raise UserError(f'{label}: shorter than one window of {cfg.block_size} characters')
        for name in names:
            if not set(name) <= vocabulary:
                raise UserError(f'{label}: {name!r} has {"".join(sorted(set(name) - vocabulary))!r}'
                                ", which the model's vocabulary lacks, so its probability is 0")
    # '±', or '+/-' where stdout's encoding has none (PYTHONIOENCODING=ascii)
    plus_minus = '±' if '±'.encode(sys.stdout.encoding or 'ascii', 'replace') != b'?' else '+/-'
    everything, all_estimates = [], []
    with Workers(enough(args.workers, max(len(names) for _, names in sets))) as workers:
        for label, names in sets:
            progress = Progress(len(names), unit)
            try:
                estimates = nelbo_estimates(model, names, args.seed, workers, kind, progress,
                                            seen)
            finally:
                progress.finish()
            mean, stderr, bits = summary(estimates, names, text, seen)
            out(f'{label}: {mean:.2f} {plus_minus} {stderr:.2f} nats/{unit}, {bits:.3f} '
                f'bits/char ({len(names)} {unit}s, {how})')
            everything, all_estimates = everything + names, all_estimates + estimates
    mean, _, bits = summary(all_estimates, everything, text, seen)
    out(f'{title} {mean:.2f} nats/{unit}  {bits:.3f} bits/char  ({len(everything)} {unit}s)')
    if text and not args.data:  # each window scored alone: the bigram sees across them
        out(f'an add-one bigram counted on the training text: '
            f'{bigram_bits(trained, held_out, seen):.3f} bits/char')


def summary(estimates, names, text, seen=0):
    """(mean nats a name, its standard error, bits a character): a name's end counts as one
    character; a window of text its characters after the first `seen`."""
    stderr = statistics.stdev(estimates) / math.sqrt(len(estimates)) if len(names) > 1 else 0.0
    return (statistics.fmean(estimates), stderr, sum(estimates) / math.log(2)
            / sum(len(n) + (not text) - seen for n in names))


def bigram_bits(trained, held_out, seen=0):
    """Bits per character of the held-out windows (after the first `seen` characters of each)
    under an add-one bigram model counted on the training text, each character given the one
    before it in the file."""
    pairs = collections.Counter(zip(trained, trained[1:]))  # how often b follows a
    firsts = collections.Counter(trained[:-1])  # how often a is followed by anything
    size, previous, bits = len(set(trained + ''.join(held_out))), trained[-1], 0.0
    for i, c in enumerate(''.join(held_out)):
        if i % len(held_out[0]) >= seen:
            bits -= math.log2((pairs[previous, c] + 1) / (firsts[previous] + size))
        previous = c
    return bits / (len(''.join(held_out)) - seen * len(held_out))


def run_forward(args):
    kind = variants.Padded if args.padding else md.Model
    cfg = md.Config(block_size=args.block_size)
    name, longest = args.name.strip(), kind.longest(cfg)
    if not name or len(name) > longest or any(unsafe(c, '\t') for c in name):
        raise UserError(f'give a name of 1 to {longest} characters, not {args.name!r}')
    tok = md.Tokenizer.from_names([name])
    model = kind(cfg, tok, None)
    tokens = model.encode(name)
    positions = model.erasable(tokens)
    out(f'forward process on {name!r}: ' + (
        f'each of the {len(tokens)} positions (PAD included)' if args.padding else
        f'each of its {len(name)} letters (not the end, PAD)') + ' is masked with probability t '
        '("{}" is MASK, "{}" is PAD)'.format(*marks(tok)))
    for tenth in range(11):
        # the same seed at every t: a position masked at one level stays masked above it
        erased = md.erase(positions, tenth / 10, random.Random(args.seed))
        noisy = [tok.MASK if i in erased else t for i, t in enumerate(tokens)]
        out(f'  t={tenth / 10:.1f}  {show(noisy, tok)}  {len(erased) / len(positions):4.0%} masked')


def run_bench(args):
    """Figures for the current configuration, on this machine, in one process."""
    # A step's cost depends on the weights (how many ReLU units are alive): time trained ones.
    if os.path.exists(args.checkpoint):
        model, weights = load_checkpoint(args.checkpoint)[0], f'the weights in {args.checkpoint}'
    else:
        cfg = md.Config()
        names = [n for n in read_names(args.data) if len(n) <= md.Model.longest(cfg)]
        model = new_model(md.Model, cfg, names, split_data(names, md.Model, cfg, 1000)[0])
        weights = 'freshly initialised weights (train first: trained ones cost differently)'
    cfg, tok, frozen = model.cfg, model.tok, model.frozen()
    text = isinstance(model, variants.Text)
    names = windows(read_text(args.data), cfg.block_size) if text else read_names(args.data)
    names = [n for n in names if len(n) <= model.longest(cfg) and set(n) <= set(tok.chars)]
    if not names:
        raise UserError(f'{args.data}: has no name this model can hold; pass --data')
    adam, rng = md.Adam(md.flatten(model.params), cfg), random.Random(0)  # the same names each run
    picks = [rng.choice(names) for _ in range(args.repeats)]
    kinds = variants.flags(type(model))
    out(f'bench: {kinds["denoiser"]} with {len(adam.values):,} parameters, {weights}, batch '
        f'size 1, {sys.implementation.name} {sys.version.split()[0]}')
    typical = model.encode(sorted(picks, key=len)[len(picks) // 2])
    if isinstance(model, variants.GPT):  # what a GPT reads: the start token and the tokens
        reads = typical
        label = f'{len(reads)} positions, the start token and the letters'
    else:
        erasable = model.erasable(typical)
        reads = [tok.MASK if i in erasable else t for i, t in enumerate(typical)]
        label = f'{len(reads)} positions, {reads.count(tok.MASK)} masked'
    for what, fn in (('training step (forward + backward + Adam)',
                      lambda i: md.train_step(model, adam, [picks[i]], i)),
                     (f'forward pass, no graph, a {"window" if text else "median name"}: '
                      f'{label}', lambda i: frozen.logits(reads, range(len(reads)))),
                     (f'written block of {cfg.block_size // 2} characters' if text else
                      'sampled name', lambda i: list(variants.text.write(
                          frozen, [], cfg.block_size // 2, random.Random(i),
                          variants.text.Sampling(), 0))
                      if text else md.sample_tokens(frozen, random.Random(i), md.Sampling()))):
        times = []
        for i in range(args.repeats):
            began = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - began)
        out(f'{what}: {statistics.median(times) * 1000:.1f} ms median of {args.repeats}')
    nodes, edges = [], []  # of one name's training graph, as far as backward reaches
    for i, name in enumerate(picks):
        rng = random.Random(i)
        interior = topological_order(model.loss(model.encode(name), md.noise_levels(
            rng, cfg.t_min, 1)[0], random.Random(rng.random())))
        leaves = {child for node in interior for child in node._children if not child._children}
        nodes.append(len(interior) + len(leaves))
        edges.append(sum(len(node._children) for node in interior))
    out(f'graph per training step: {statistics.median(nodes):,.0f} nodes, '
        f'{statistics.median(edges):,.0f} edges (median)')
