"""The sample command: names from a checkpoint (with patterns, traces, statistics, pictures
and a terminal animation), or running text written block after block."""

import os
import random
import shutil

import microdiffusion as md
import variants
from lab.checkpoint import load_checkpoint
from lab.data import training_split
from lab.files import check_outputs, write_atomic
from lab.pictures import frames, reverse_svg
from lab.reports import sample_report, score_line
from lab.terminal import UserError, animate, marks, on_terminal, out, say, show
from lab.workers import Workers, enough, sample_names
from variants.padded import Sampling as PaddedSampling
from variants.text import Sampling as TextSampling, write

LOOP = ('loop_at', 'loop_passes', 'loop_remask', 'loop_temperature')  # (--loop's order)
SAMPLE_SETTINGS = ('steps', 'temp_start', 'temp_end', 'temperature', 'remask', 'order',
                   'length') + LOOP
# What a left-to-right sampler (GPT's, or --order left-to-right) has no use for: it draws every
# position, the end too, in order at the one --temperature, not by confidence.
NOT_LEFT_TO_RIGHT = ('temp_start', 'temp_end', 'remask', 'length') + LOOP


def sampling_from(args, model):
    """The Sampling the flags ask for, a pattern included, or the reason it cannot be."""
    padded = isinstance(model, variants.Padded)
    kind = PaddedSampling if padded else TextSampling if isinstance(
        model, variants.Text) else md.Sampling
    how = kind(**{
        name: getattr(args, name) for name in SAMPLE_SETTINGS
        if getattr(args, name) is not None and (padded or name != 'length')})
    gpt = isinstance(model, variants.GPT)
    for name in NOT_LEFT_TO_RIGHT:
        if getattr(args, name) is not None and (gpt or how.order == 'left-to-right'):
            raise UserError(f'--{name.replace("_", "-")}: ' + (
                'a GPT' if gpt else '--order left-to-right') + ' draws every position in order at '
                'the one --temperature, the end included; it has no schedule and re-masks nothing')
    if args.length == 'along' and not padded:
        raise UserError('--length along: this model draws its length from p(length) before any '
                        'letter; only a --padding model finds its end along with the letters')
    for name in LOOP if args.length == 'along' else ():
        if getattr(args, name) is not None:
            raise UserError(f'--{name.replace("_", "-")}: the loop re-masks the letters of a name '
                            'whose end is placed first; --length along finds it with them')
    try:
        how.pattern = args.pattern and md.parse_pattern(args.pattern, model)
    except ValueError as e:
        raise UserError(str(e)) from None
    return how


def run_sample(args):
    model, state = load_checkpoint(args.checkpoint)
    if isinstance(model, variants.Text):
        return write_text(args, model)
    for flag in ('chars', 'prompt', 'context'):
        if getattr(args, flag):
            raise UserError(f'--{flag}: {args.checkpoint} is a model of names; --num says how '
                            'many')
    args.num = args.num or 20
    for flag, needs in (('score_with', 'stats'), ('data', 'stats'), ('compare', 'animate')):
        if getattr(args, flag) is not None and not getattr(args, needs):
            raise UserError(f'--{flag.replace("_", "-")} is for --{needs}: use it with --{needs}')
    check_outputs([('--svg', args.svg)], [('--checkpoint', args.checkpoint), ('--data', args.data),
                                          ('--compare', args.compare),
                                          ('--score-with', args.score_with)])
    how = sampling_from(args, model)
    if args.stats:  # everything read first: a bad file should fail before the sampling
        train_names, held_out, _ = training_split(model, state, args.data, args.checkpoint)
    scorer = args.score_with and load_checkpoint(args.score_with, flag='--score-with',
                                                 of_names=True)[0]
    other = args.compare and load_checkpoint(args.compare, flag='--compare', of_names=True)[0]
    animating = args.animate and on_terminal()  # else exactly as without --animate
    models = [model] + [other] * bool(animating and other)
    start, samples, passes, pictured = how.pattern[0] if how.pattern else [], [], [], []
    reader_left = False
    with Workers(enough(args.workers, args.num, 4)) as workers:
        results = zip(*[sample_names(m, args.num, args.seed, how if m is model else md.Sampling(
            temperature=how.temperature, order=how.order), workers,
            bool(args.trace or args.svg or animating)) for m in models])
        for number, ((name, trace, made_in), *_) in enumerate(
                animated(results, models, start, args) if animating else results, start=1):
            if args.trace:
                say(f'name {number}: reverse process ("{{}}" is MASK, "{{}}" is PAD)'.format(
                    *marks(model.tok)))
                for i, t, T, tokens in trace:
                    say(f'  step {i:3d}  t={t:.3f}  T={T:.3f}  {show(tokens, model.tok)}')
            if args.svg and len(pictured) < 8:
                pictured.append(frames(trace, model.tok, model.cfg.block_size, start))
            try:
                if not reader_left:
                    out(name)
            except BrokenPipeError:  # `| head`: the reader left, but the picture is still made
                reader_left = True
            if reader_left and (not args.svg or len(pictured) == min(8, args.num)):
                break
            if args.stats:
                samples.append(name)
                passes.append(made_in)
    if args.svg:
        write_atomic(args.svg, reverse_svg(pictured, model.tok), '--svg')
    if reader_left:
        raise BrokenPipeError  # main ends quietly
    for line in sample_report(samples, train_names, held_out, model.cfg.block_size,
                              passes) if args.stats else ():
        say(line)
    if scorer:
        trained = set(train_names)
        new = [name for name in samples if name not in trained]
        with Workers(enough(args.workers, max(len(samples), len(held_out)))) as workers:
            say(f'scored by {args.score_with}: ' + '; '.join(
                score_line(scorer, names, label, workers) for label, names in
                (('samples', samples), (f'the {len(new)} new ones', new),
                 ('held-out real names', held_out))))


def write_text(args, model):
    """sample from a model of running text: --chars characters after --prompt, written block
    by block (a GPT's block: one character), each block printed as soon as it is decided."""
    for flag in ('num', 'pattern', 'stats', 'length', 'data', 'svg', 'compare', 'score_with',
                 *LOOP):
        if getattr(args, flag) not in (None, False):
            raise UserError(f'--{flag.replace("_", "-")}: means nothing for running text; '
                            '--chars and --prompt say what to write')
    unknown = sorted(set(args.prompt) - set(model.tok.chars))
    if unknown:
        raise UserError(f'--prompt: {"".join(unknown)!r} is not in the vocabulary of '
                        f'{args.checkpoint}')
    how, tok, size = sampling_from(args, model), model.tok, model.cfg.block_size
    context = args.context or (size - 1 if isinstance(model, variants.GPT) else 3 * size // 4)
    if context >= size:
        raise UserError(f'--context {context}: a window of {size} needs room to write in; give '
                        f'at most {size - 1}')
    animating = args.animate and on_terminal()
    out(args.prompt, end='')
    for number, (fresh, trace) in enumerate(write(
            model.frozen(), [tok.ids[c] for c in args.prompt], args.chars or 500,
            random.Random(f'{args.seed}:text'), how, context, args.trace or animating), 1):
        window = trace[-1][3] if trace else []
        start = window[:len(window) - len(fresh)] + [tok.MASK] * len(fresh)
        if animating:
            animate([[[show(f, tok, not os.environ.get('NO_COLOR'))
                       for f in frames(trace, tok, len(window), start)]]], args.fps)
        for i, t, T, tokens in trace if args.trace else ():
            say(f'block {number}, step {i:3d}  t={t:.3f}  T={T:.3f}  {show(tokens, tok)!r}')
        out(''.join(tok.chars[t] for t in fresh), end='')
    out('')


def animated(results, models, start, args):
    """The same results, each block of a screenful drawn developing in place before it is
    passed on; models side by side (--compare), each starting from its own blank."""
    block, left, starts = [], args.num, [start] + [[]] * (len(models) - 1)
    colour = not os.environ.get('NO_COLOR')
    for result in results:
        block.append(result)
        if len(block) < min(left, max(1, shutil.get_terminal_size((80, 24)).lines - 2)):
            continue
        animate([[[show(f, m.tok, colour) for f in frames(trace, m.tok, m.cfg.block_size, s)]
                  for m, s, (_, trace, _) in zip(models, starts, row)] for row in block], args.fps)
        yield from block
        left -= len(block)
        block = []
