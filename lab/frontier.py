"""The frontier command: how good a sampler's new names are, against how often its names are
new. A colder sampler scores better and copies more; every knob moves a model along one such
curve, and only a better sampler (or model) moves the curve. This measures curves over the
temperature, with and without ReMDM's loop, and draws them in one SVG."""

import statistics
from html import escape

import microdiffusion as md
from lab.checkpoint import load_checkpoint
from lab.files import check_outputs, write_atomic
from lab.pictures import svg
from lab.reports import score_kind
from lab.sampling import training_split
from lab.terminal import out
from lab.workers import Workers, enough, nelbo_estimates, sample_names

COLOURS = ('#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
           '#7f7f7f', '#bcbd22', '#17becf')


def run_frontier(args):
    paths = args.checkpoint or ['model.json']
    check_outputs([('--svg', args.svg)], [('--score-with', args.score_with), ('--data', args.data)]
                  + [('--checkpoint', path) for path in paths])
    scorer = load_checkpoint(args.score_with, flag='--score-with', of_names=True)[0]
    models = [(path, *load_checkpoint(path, of_names=True)) for path in paths]
    loops = [{}] + args.loop
    series = []
    with Workers(enough(args.workers, args.num, 4)) as workers:
        for path, model, state in models:
            trained = set(training_split(model, state, args.data, path)[0])
            for steps in args.steps:
                for loop in loops:
                    label = f'{path}, {steps} steps, ' + ('loop ' + ','.join(
                        f'{x:g}' for x in loop.values()) if loop else 'no loop')
                    points = [point(model, scorer, trained, md.Sampling(
                        steps=steps, temperature=T, **loop), args, workers) + (T,)
                        for T in args.temperatures]
                    series.append((label, points))
                    for new, score, unique, passes, T in points:
                        out(f'{label}, T {T:g}: {new:.1%} new, {unique:.1%} unique, new names '
                            f'{score:.2f} nats, {passes:.2f} forward passes a name')
    if args.svg:
        write_atomic(args.svg, frontier_svg(series, args.score_with), '--svg')


def point(model, scorer, trained, how, args, workers):
    """(share new, mean score of the new names, share unique, forward passes a name), each
    the mean over args.seeds of args.num names."""
    figures = []
    for seed in args.seeds:
        made = list(sample_names(model, args.num, seed, how, workers))
        names = [name for name, *_ in made]
        new = [n for n in names if n not in trained and len(n) <= scorer.longest(scorer.cfg)
               and set(n) <= set(scorer.tok.chars)]
        score = statistics.fmean(nelbo_estimates(scorer, new, 0, workers, score_kind(scorer)))
        figures.append((len(new) / len(names), score, len(set(names)) / len(names),
                        statistics.fmean(passes for *_, passes in made)))
    return tuple(map(statistics.fmean, zip(*figures)))


def frontier_svg(series, scorer, w=640, h=420, pad=60):
    """Each series a line through its points, x the share of new names, y their score."""
    xs = [p[0] for _, points in series for p in points]
    ys = [p[1] for _, points in series for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def xy(x, y):
        return (pad + (x - x0) / ((x1 - x0) or 1) * (w - 2 * pad),
                h - pad - (y - y0) / ((y1 - y0) or 1) * (h - 2 * pad - 20 * len(series)))
    body = [f'<path d="M{pad} {pad}V{h - pad}H{w - pad}" fill="none" stroke="black"/>',
            f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">names not in the training '
            f'data ({x0:.1%} to {x1:.1%})</text>',
            f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">'
            f'-log p of the new names under {escape(scorer)}, nats ({y0:.2f} to {y1:.2f}; '
            'lower is better)</text>']
    for k, (label, points) in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        line = ' '.join('%.1f,%.1f' % xy(x, y) for x, y, *_ in points)
        body.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                    'stroke-width="1.5"/>' + ''.join(
                        '<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (*xy(x, y), colour)
                        for x, y, *_ in points))
        body.append(f'<text x="{pad + 10}" y="{pad + 16 * k}" fill="{colour}">'
                    f'{escape(label)}</text>')
    return svg(w, h, ''.join(body))
