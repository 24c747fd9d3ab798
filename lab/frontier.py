"""The frontier command: how good a sampler's new names are, against how often its names are
new. A colder sampler scores better and copies more: every knob moves a model along one such
curve, and only a better sampler (or model) moves the curve itself. This measures the curve
over the temperature, with and without ReMDM's loop, and draws the curves in one SVG."""

import os
import statistics

import microdiffusion as md
from lab.checkpoint import load_checkpoint
from lab.data import training_split
from lab.files import check_outputs, write_atomic
from lab.pictures import chart_svg
from lab.reports import score_kind
from lab.terminal import out
from lab.workers import Workers, enough, nelbo_estimates, sample_names


def run_frontier(args):
    paths = args.checkpoint or ['model.json']
    check_outputs([('--svg', args.svg)], [('--score-with', args.score_with), ('--data', args.data)]
                  + [('--checkpoint', path) for path in paths])
    scorer = load_checkpoint(args.score_with, flag='--score-with', of_names=True)[0]
    models = [(path, *load_checkpoint(path, of_names=True)) for path in paths]
    loops, series = [{}] + args.loop, []
    with Workers(enough(args.workers, args.num, 4)) as workers:
        for path, model, state in models:
            trained = set(training_split(model, state, args.data, path)[0])
            for steps in args.steps:
                for loop in loops:
                    label = f'{path}, {steps} steps, ' + ('loop ' + ','.join(
                        f'{x:g}' for x in loop.values()) if loop else 'no loop')
                    points = [point(model, scorer, trained, md.Sampling(
                        steps=steps, temperature=T, **{'loop_passes': 0, **loop}), args,
                        workers) + (T,)
                        for T in args.temperatures]
                    for new, score, unique, passes, T in points:
                        out(f'{label}, T {T:g}: {new:.1%} new, {unique:.1%} unique, new names '
                            f'{score:.2f} nats, {passes:.2f} forward passes a name')
                    # a colour for each checkpoint and loop; the steps after the first dashed
                    series.append((label, [p[:2] for p in points], 'both',
                                   len(series) // len(loops) % len(args.steps) > 0))
    if args.svg:
        write_atomic(args.svg, chart_svg(
            series, ('names not in the training data', '{:.1%}'),
            (f'new names, nats under {os.path.basename(args.score_with)}', '{:.2f}'),
            colours=[k % len(loops) + len(loops) * (k // len(loops) // len(args.steps))
                     for k in range(len(series))]), '--svg')


def point(model, scorer, trained, how, args, workers):
    """(share new, mean score of the new names, share unique, forward passes a name), each
    the mean over args.seeds of args.num names; new names the scorer cannot hold (too long,
    a character it lacks) are not scored."""
    figures = []
    for seed in args.seeds:
        made = list(sample_names(model, args.num, seed, how, workers))
        names = [name for name, *_ in made]
        new = [name for name in names if name not in trained]
        scored = [name for name in new if len(name) <= scorer.longest(scorer.cfg) and
                  set(name) <= set(scorer.tok.chars)]
        score = statistics.fmean(nelbo_estimates(scorer, scored, 0, workers, score_kind(scorer)))
        figures.append((len(new) / len(names), score, len(set(names)) / len(names),
                        statistics.fmean(passes for *_, passes in made)))
    return tuple(map(statistics.fmean, zip(*figures)))
