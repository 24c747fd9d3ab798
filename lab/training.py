"""Training in the lab: the lesson's train_step, with workers, signals, validation, progress
and saving; and the train command, new or resumed, every flag checked before any work."""

import contextlib
import os
import shlex
import shutil
import signal
import statistics
import sys
import time
from dataclasses import asdict, fields

import microdiffusion as md
import variants
from lab.checkpoint import load_checkpoint, loadable, save_checkpoint
from lab.data import DEFAULT_DATA, fingerprint, read_data, read_names, read_text, split_data
from lab.files import check_outputs, one_writer, write_atomic
from lab.pictures import curve_chart, curve_svg
from lab.settings import TEXT_BLOCK, Validation, too_large
from lab.terminal import Interrupted, Progress, UserError, say
from lab.workers import STOP_SIGNALS, Workers, gradients_from, nelbo_estimates

TRAIN_SETTINGS = ('steps', 'batch_size', 'lr', 'seed', 'n_embd', 'n_head', 'n_layer',
                  'block_size', 'mlp_hidden')  # Config fields; the kind of model: KIND_FLAGS
KIND_FLAGS = ('model', 'denoiser', 'padding', 'text')


@contextlib.contextmanager
def handling(numbers, handler):
    """Within it, these signals go to handler; after it, to whatever had them before."""
    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, before in previous.items():
            signal.signal(number, before)


@contextlib.contextmanager
def noting(stops):
    """Within it a stop signal is noted in `stops`, and the step under way stops at a safe
    place: with workers, between two names (gradients_from); in this process, whenever its
    names' gradients are being computed (Adam has not moved), found by looking at once and
    then every 0.1 s (SIGALRM): a step of thousands of names does not hold the signal up."""
    alarm = getattr(signal, 'SIGALRM', None)

    def handler(number, frame):
        if number != alarm:
            stops.append(number)
        while frame is not None:
            if frame.f_code is md.name_gradient.__code__:
                raise Interrupted(stops[0])
            frame = frame.f_back
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
    with handling(STOP_SIGNALS + [alarm] * bool(alarm), handler):
        try:
            yield
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)


def run_training(model, train, held_out, data_fingerprint, checkpoint, workers, state=None,
                 stop_after=None, stop=lambda: 0, data=None, validation=Validation()):
    """Train model.params in place up to model.cfg.steps (continuing from `state`), saving the
    checkpoint at every validation and at the end. Once stop() names a signal, or memory runs
    out, the step under way is dropped (Adam untouched), the last one saved, and Interrupted
    raised, with the signal's number or 'memory'; a loss that is not finite, or weights no
    checkpoint may hold, raise UserError with the checkpoint as it was. stop_after (tests)
    ends it early."""
    cfg, adam = model.cfg, md.Adam(md.flatten(model.params), model.cfg)
    step, saved_at, smooth, weight, history = 0, None, 0.0, 0.0, []  # saved_at: on disk
    if state:
        step = saved_at = state['step']
        adam.t, adam.m, adam.v = state['adam_t'], state['adam_m'], state['adam_v']
        (smooth, weight), history = state['smoothed'], list(state['history'])
    # history: the run's curve, [step, loss, smoothed loss, validation or None, seconds] rows
    batches, progress = model.batches(train), Progress(cfg.steps, 'step', step)
    val, val_names = None, held_out[:validation.val_names]
    began = time.perf_counter() - (history[-1][4] if history else 0.0)
    # The loss covers noise levels from t_min up (see md.diffusion_loss); validation's NELBO
    # covers them all and the length: it sits above the loss without any over-fitting.
    exact = isinstance(model, variants.GPT)
    labels = ('loss', 'val NLL ') if exact else (f'loss(t>={cfg.t_min:g})', 'val NELBO ~')

    def save():
        try:
            save_checkpoint(checkpoint, model, {
                'step': step, 'settings': {**asdict(cfg), **asdict(validation)},
                'data_fingerprint': data_fingerprint, 'data': data, 'adam_t': adam.t,
                'adam_m': adam.m, 'adam_v': adam.v, 'history': history,
                'smoothed': [smooth, weight]})
        except (OSError, MemoryError) as e:
            reason = 'out of memory' if isinstance(e, MemoryError) else e.strerror or e
            raise UserError(f'{checkpoint}: could not save step {step} ({reason}); {kept()}') \
                from None

    def kept():
        return 'nothing was saved' if saved_at is None else f'it still holds step {saved_at}'

    def diverged(reason):
        return UserError(f'training diverged at step {step + 1} ({reason}); {checkpoint} ' + (
            'is untouched' if saved_at is None else f'keeps step {saved_at}') +
            '; try a smaller --lr')

    # The one seam: the lesson's train_step computes the batch itself, unless workers share it.
    gradients = gradients_from(workers, model, stop) if workers.n > 1 else None
    short_of_memory = False
    try:
        while step < cfg.steps and step != stop_after and not stop():
            try:
                loss = md.train_step(model, adam, batches.at(step), step, gradients)
                done = step + 1
                validated = val_names and (done % validation.val_every == 0 or done == cfg.steps)
                if validated:  # one pass a name, always the same seed: only the model changes
                    val = statistics.fmean(nelbo_estimates(model, val_names, 0, workers, (
                        'exact' if exact else 'one pass')))
            except Interrupted:
                break
            except MemoryError:
                short_of_memory = True
                break
            except ArithmeticError as e:
                raise diverged(e) from None
            if not loadable(model, adam):
                raise diverged('weights past 1e6, more than a checkpoint holds')
            step += 1
            smooth, weight = 0.98 * smooth + 0.02 * loss, 0.98 * weight + 0.02
            if validated or step % max(1, cfg.steps // 400) == 0 or step == cfg.steps:
                history.append([step, loss, smooth / weight, val if validated else None,
                                round(time.perf_counter() - began, 3)])
            if validated:
                save()
                saved_at = step
            progress.update(step, f'{labels[0]} {loss:.3f}  smooth {smooth / weight:.3f}' + (
                f'  {labels[1]}{val:.2f}' if val is not None else ''), force=saved_at == step)
        if saved_at != step:
            save()
    finally:
        progress.finish()
    if short_of_memory or stop() and step < cfg.steps:
        raise Interrupted('memory' if short_of_memory else stop(), step)
    return history


def run_train(args, saved=True):
    """Train a new model, or continue one (--resume), into --checkpoint; return (the model,
    what it trained on, what was held out)."""
    model, state, train, held_out, validation = resumed(args) if args.resume else \
        model_from_flags(args)
    check_outputs([('--checkpoint', args.checkpoint), ('--curve', args.curve)],
                  [('--data', args.data)])
    cfg, stops, text = model.cfg, [], isinstance(model, variants.Text)
    what = (f'{len(train):,} characters ({len(held_out):,} windows held out)' if text
            else f'{len(train):,} names ({len(held_out):,} held out)')
    with one_writer(args.checkpoint), noting(stops), \
            Workers(min(args.workers, cfg.batch_size)) as workers:
        kinds = variants.flags(type(model))
        shape = (f'{cfg.mlp_hidden} hidden units' if kinds['denoiser'] == 'mlp' else
                 f'{cfg.n_layer} layers of {cfg.n_embd}, {cfg.n_head} heads')
        say(f'resuming {args.checkpoint} at step {state["step"]} of {cfg.steps}' if state else
            f'training a {kinds["model"]} {kinds["denoiser"]} ({shape}, {cfg.block_size} '
            f'positions{", PAD-filled" * kinds["padding"]}; {len(md.flatten(model.params)):,} '
            f'parameters) on {what} for {cfg.steps} steps of {cfg.batch_size}')
        try:
            history = run_training(model, train, held_out, fingerprint(train), args.checkpoint,
                                   workers, state, data=os.path.abspath(args.data),
                                   stop=lambda: stops[0] if stops else 0,
                                   validation=validation)
        except Interrupted as e:
            why, saved = e.args[0], (f'step {e.args[1]} saved in {args.checkpoint}; continue '
                                     f'with "{resume_command(args)}"')
            if why == 'memory':
                raise UserError(f'out of memory at step {e.args[1] + 1}; {saved} when there is '
                                'more') from None
            raise Interrupted(why, saved) from None
    unit = 'window' if text else 'name'
    for line in curve_chart(history, unit):
        say(line)
    if args.curve:
        write_atomic(args.curve, curve_svg(history, unit), '--curve')
        say(f'saved the training curve in {args.curve}')
    if saved:
        say(f'saved {args.checkpoint}')
    return model, train, held_out


def resume_command(args):
    """The command that continues a stopped run, as it runs from this folder."""
    python = shutil.which(os.path.basename(sys.executable))  # its name, if that finds it
    python = os.path.basename(python) if python and os.path.samefile(
        python, sys.executable) else sys.executable
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == 'microdiffusion.py' else \
        'microdiffusion.py'
    return shlex.join([python, script, 'train', '--resume', '--checkpoint', args.checkpoint]
                      + ['--data', args.data] * (args.data != DEFAULT_DATA))


def new_model(kind, cfg, data, train):
    """A fresh model of this class: the data's characters, p(length) counted on what trains."""
    try:
        return kind.new(cfg, md.Tokenizer.from_names(data), train)
    except ValueError as e:  # a rule of the model's own
        raise UserError(str(e)) from None


def model_from_flags(args):
    """(a fresh model, no state, the training data, the held-out data, the lab's settings) for
    train's flags, every one checked first."""
    try:
        kind = variants.VARIANTS[variants.choose(**{
            flag: getattr(args, flag) for flag in KIND_FLAGS if getattr(args, flag)})]
    except ValueError as e:  # a kind of model there cannot be
        raise UserError(str(e)) from None
    names = [f.name for f in fields(variants.config_class(kind))]
    cfg = variants.config_class(kind)(**{name: getattr(args, name) for name in TRAIN_SETTINGS
                                         if name in names and getattr(args, name) is not None})
    if issubclass(kind, variants.Text):
        data, cfg.block_size = read_text(args.data), args.block_size or TEXT_BLOCK
        if len(data) < 2 * cfg.block_size:  # a window to train on, and one held out
            raise UserError(f'{args.data}: has {len(data)} characters; running text needs at '
                            f'least {2 * cfg.block_size}, two windows of --block-size')
    else:
        data = read_names(args.data, *[kind.longest(cfg)] * (args.block_size is not None))
    if args.block_size is None and not issubclass(kind, variants.Text):
        cfg.block_size = max(map(len, data)) + 1  # the longest name and its end (or a start)
    problem = too_large(kind, cfg, len(set(''.join(data))) + 2)
    if problem:
        raise UserError(f'that model would have {problem}; choose a smaller --n-embd, '
                        '--n-head, --n-layer or --mlp-hidden, or shorter names')
    validation = Validation()
    train, held_out = split_data(data, kind, cfg, validation.val_size)
    return new_model(kind, cfg, data, train), None, train, held_out, validation


def resumed(args):
    """(the checkpoint's model, its training state, the training data, the held-out data,
    the lab's settings): the run's settings restored, every flag checked against them."""
    model, state = load_checkpoint(args.checkpoint, resuming=True)
    if state is None:
        raise UserError(f'{args.checkpoint}: has no training state to resume from (only a '
                        'checkpoint written by train holds one)')
    kind, settings = type(model), state['settings']
    for flag, value in variants.flags(kind).items():
        if getattr(args, flag) not in (None, value):
            raise UserError(f'--{flag}: a resumed run keeps its checkpoint\'s kind of model '
                            f'({variants.describe(kind)}); start a new run to change it')
    for name in TRAIN_SETTINGS:  # but --steps, which may extend the run
        if name != 'steps' and getattr(args, name) not in (None, settings.get(name, getattr(
                args, name))):
            raise UserError(f'--{name.replace("_", "-")}: a resumed run keeps its checkpoint\'s '
                            f'{settings[name]}; start a new run to change it')
    cfg = model.cfg = variants.config_class(kind)(**{
        f.name: settings[f.name] for f in fields(variants.config_class(kind))})
    validation = Validation(**{f.name: settings[f.name] for f in fields(Validation)})
    data = read_data(args.data, kind, cfg)
    if md.Tokenizer.from_names(data).chars != model.tok.chars:
        raise UserError(f"{args.data}: its characters differ from the checkpoint's vocabulary; "
                        'resume with the data it was trained on')
    train, held_out = split_data(data, kind, cfg, validation.val_size)
    if fingerprint(train) != state['data_fingerprint']:
        raise UserError(f'{args.data}: is not the data {args.checkpoint} was trained on; '
                        'resume with the same file')
    if args.steps is not None and args.steps < state['step']:
        raise UserError(f'--steps {args.steps}: the checkpoint is already at step {state["step"]}')
    cfg.steps = args.steps or cfg.steps
    if state['step'] >= cfg.steps:
        raise UserError(f'{args.checkpoint}: already trained for {cfg.steps} steps; pass '
                        '--steps with a larger total to continue')
    return model, state, train, held_out, validation
