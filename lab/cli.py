"""The command line: each command's flags, checked before any work, and main(), which turns
every way a run can end into an exit status and at most one line on stderr."""

import argparse
import os
import signal
import sys

import microdiffusion as md
from lab.frontier import run_frontier
from lab.reports import run_bench, run_eval, run_forward
from lab.sampling import LOOP, SAMPLE_SETTINGS, run_sample
from lab.settings import LIMITS, SAMPLING_LIMITS, TEXT_BLOCK, fits
from lab.terminal import Interrupted, UserError, out, say, unsafe
from lab.data import DEFAULT_DATA, ROOT
from lab.training import KIND_FLAGS, TRAIN_SETTINGS, run_train
from lab.workers import CPUS, STOP_SIGNALS, TRAIN_PROCESSES, Workers, sample_names
from lab.workers import without_cycle_collector
from variants.mlp import MLPConfig
from variants.padded import Sampling as PaddedSampling

DEFAULT_CHECKPOINT = 'model.json'


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is reported in one line, with where to find help."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def setting(rule):
    """An argparse type that reads a number and checks it by a rule of LIMITS."""
    kind, low, high = rule

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'{text!r} is not a {"whole number" if kind is int else "number"}') from None
        if not fits(value, rule):
            raise argparse.ArgumentTypeError(
                f'{value} is below the minimum, {low}' if kind is int and value < low else
                f'{value} is above the maximum, {high}' if kind is int else
                f'{text} must be a finite number above {low} and below {high}')
        return value
    return parse


def loop_setting(text):
    """An argparse type for --loop AT,PASSES,REMASK[,TEMPERATURE]: ReMDM's loop's settings."""
    parts = text.split(',')
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f'{text!r}: give AT,PASSES,REMASK[,TEMPERATURE], such '
                                         'as 2,4,1')
    return {name: setting(SAMPLING_LIMITS[name])(part) for name, part in zip(LOOP, parts)}


def file_name(text):
    """An argparse type for a path: not an empty one."""
    if not text:
        raise argparse.ArgumentTypeError('give a file name, not an empty one')
    return text


FILE, SWITCH, SEED = dict(type=file_name), dict(action='store_true'), dict(type=int, default=0)
WORKERS = dict(type=setting((int, 1, 1024)), default=CPUS,
               help='processes (default: every CPU; results do not depend on it)')
PADDING = 'the older model: names PAD-filled to the block, every PAD erased and predicted'
SWITCHES = {'padding': PADDING, 'text': 'the data is running text (a book, code), not a list: '
            f'windows of --block-size characters ({TEXT_BLOCK})'}
# Each command: what it does, the settings it takes as flags (LIMITS checks them), its own flags
COMMANDS = {
    'train': ('train a model and save a checkpoint', TRAIN_SETTINGS + KIND_FLAGS, [
        ('--data', dict(FILE, default=DEFAULT_DATA, help='names, one a line (names.txt); or text')),
        ('--curve', dict(FILE, metavar='FILE', help='also the training curve, an SVG picture')),
        ('--resume', dict(SWITCH, help='continue the run saved in --checkpoint')),
        ('--workers', dict(WORKERS, default=TRAIN_PROCESSES,
                           help='processes (default: every CPU; one under PyPy)'))]),
    'sample': ('print new names from a checkpoint', SAMPLE_SETTINGS, [
        ('--num', dict(type=setting((int, 1, 10**15)), help='how many names (20)')),
        ('--chars', dict(type=setting((int, 1, 10**9)), help='running text: how many (500)')),
        ('--prompt', dict(default='', help='running text: what it goes on from (nothing)')),
        ('--context', dict(type=setting((int, 1, 255)), help='running text: characters kept '
                           'in view as a block is written (3/4 of the window; a GPT: all)')),
        ('--seed', SEED),
        ('--pattern', dict(help="fixed letters, '_' one to fill in, '*' any: m_r__, ka*, a*a")),
        ('--trace', dict(SWITCH, help='show each reverse step (stderr)')),
        ('--stats', dict(SWITCH, help='new, unique and length figures (stderr)')),
        ('--data', dict(FILE, help="with --stats: the training data (the checkpoint's own)")),
        ('--animate', dict(SWITCH, help='on a terminal, the names developing (NO_COLOR: plain)')),
        ('--fps', dict(type=setting((float, 0.01, 10**4)), default=12.0,
                       help='frames a second for --animate (12)')),
        ('--compare', dict(FILE, metavar='CHECKPOINT', help='with --animate: this one beside')),
        ('--svg', dict(FILE, metavar='FILE', help='the first 8 names developing, an SVG picture')),
        ('--score-with', dict(FILE, metavar='CHECKPOINT',
                              help='with --stats: the samples scored by this model')),
        ('--workers', WORKERS)]),
    'eval': ('negative ELBO of names under a checkpoint', (), [
        ('--data', dict(FILE, action='append',
                        help="names (repeatable; the checkpoint's own held-out ones)")),
        ('--seed', dict(SEED, help='seed of the random orders')),
        ('--order', dict(choices=('any', 'left-to-right'), default='any',
                         help='left-to-right: the exact -log p in that one order')),
        ('--context', dict(type=setting((int, 0, 255)), help='running text: score what '
                           'follows the first N characters of each window, as sample writes')),
        ('--workers', WORKERS)]),
    'forward': ('show the forward (masking) process on a name', None, [
        ('name', {}), ('--seed', SEED), ('--padding', dict(SWITCH, help=PADDING)),
        ('--block-size', dict(type=setting(LIMITS['block_size']), default=md.Config.block_size,
                              help=f'positions ({md.Config.block_size})'))]),
    'frontier': ('measure samplers: the score of the new names against their share', None, [
        ('--checkpoint', dict(FILE, action='append', default=[], help='a model of names '
                              '(repeatable; model.json)')),
        ('--score-with', dict(FILE, default=os.path.join(ROOT, 'models', 'gpt-long.json'),
                              metavar='CHECKPOINT', help='the scorer (models/gpt-long.json)')),
        ('--temperatures', dict(type=setting(SAMPLING_LIMITS['temperature']), nargs='+',
                                default=[0.75, 1.0, 1.25, 1.5], help='(0.75 1 1.25 1.5)')),
        ('--steps', dict(type=setting(SAMPLING_LIMITS['steps']), nargs='+', default=[64],
                         help='each a curve (64)')),
        ('--loop', dict(type=loop_setting, action='append', default=[], help='each a curve '
                        'besides no loop: AT,PASSES,REMASK[,TEMPERATURE]')),
        ('--seeds', dict(type=int, nargs='+', default=[0, 1, 2], help='(0 1 2)')),
        ('--num', dict(type=setting((int, 1, 10**7)), default=1000, help='names a seed (1000)')),
        ('--data', dict(FILE, help="the training data (each checkpoint's own)")),
        ('--svg', dict(FILE, metavar='FILE', help='the curves, an SVG picture')),
        ('--workers', WORKERS)]),
    'bench': ('time training steps, forward passes, samples', (), [
        ('--data', dict(FILE, default=DEFAULT_DATA, help='names to time (names.txt)')),
        ('--repeats', dict(type=setting((int, 3, 10**6)), default=30, help='timings (30)'))])}
DEFAULTS = {'sample': vars(PaddedSampling()), 'train': {
    **vars(MLPConfig()), 'model': 'diffusion', 'denoiser': 'transformer', 'padding': False,
    'text': False}}


def build_parser():
    parser = Parser(prog='microdiffusion.py', description='Masked text diffusion on names, in '
                    'pure Python. With no command: train on names.txt, save model.json, print '
                    '20 names.')
    commands = parser.add_subparsers(dest='command', metavar='command')
    for name, (about, settings, flags) in COMMANDS.items():
        sub = commands.add_parser(name, help=about, description=about[:1].upper() + about[1:] + (
            '. A GPT, or --order left-to-right, draws one position at a time at --temperature, '
            'and refuses --temp-start, --temp-end, --remask, --length and --loop-*.' * (
                name == 'sample')))
        if settings is not None:  # all but forward read or write a checkpoint
            sub.add_argument('--checkpoint', **FILE, default=DEFAULT_CHECKPOINT,
                             help='the model file (model.json)')
        limits = SAMPLING_LIMITS if name == 'sample' else LIMITS
        for setting_name in settings or ():
            rule = limits[setting_name]  # an unset flag is None: the default, or the resumed run's
            options = (dict(action='store_const', const=True, help=SWITCHES[setting_name])
                       if rule is bool else
                       dict(choices=rule) if isinstance(rule[0], str) else dict(type=setting(rule)))
            sub.add_argument('--' + setting_name.replace('_', '-'),
                             **{'help': f'({DEFAULTS[name][setting_name]})', **options})
        for flag, options in flags:
            sub.add_argument(flag, **options)
    return parser


def run_lab(args):
    """python microdiffusion.py: train on names.txt with the defaults, then print 20 names,
    each one the model remembered marked as such: what it invented is the rest."""
    model, train, held_out = run_train(build_parser().parse_args(['train']), saved=False)
    with Workers(min(CPUS, 4)) as workers:
        names = [name for name, *_ in sample_names(model, 20, 0, md.Sampling(), workers)]
    header, lines = marked(names, train, held_out)
    say(f'saved {DEFAULT_CHECKPOINT}; {header}:')
    for line in lines:
        out(line)


def marked(names, train, held_out):
    """('20 names, 17 new', the names one a line, each the model trained on or held out
    marked so): held-out names are real but were never seen, so they count as new."""
    trained, held = set(train), set(held_out)
    return (f'{len(names)} names, {sum(name not in trained for name in names)} new',
            [name + ('  (trained on)' if name in trained else '  (held out)' * (name in held))
             for name in names])


RUN = {None: run_lab, 'train': run_train, 'sample': run_sample, 'eval': run_eval,
       'forward': run_forward, 'frontier': run_frontier, 'bench': run_bench}


def stop(number, frame):
    """SIGTERM and SIGHUP end a run as Ctrl-C does (training notes them and saves first)."""
    raise KeyboardInterrupt(number)


def main(argv=None):
    args = build_parser().parse_args(argv)
    without_cycle_collector()
    for number in STOP_SIGNALS:  # (Ctrl-C raises KeyboardInterrupt already, or a debugger's)
        if number != signal.SIGINT:
            signal.signal(number, stop)
    try:
        for number, name in ((1, 'stdout'), (2, 'stderr')):
            if getattr(sys, name) is None:  # closed: the next file opened would take its number
                if number == 1 and args.command != 'train':
                    raise UserError('stdout is closed, so the results would be lost; give it a '
                                    'file')
                os.dup2(os.open(os.devnull, os.O_WRONLY), number)
                setattr(sys, name, open(number, 'w', closefd=False))
        RUN[args.command](args)
        return 0
    except UserError as e:  # one line, whatever the message holds
        say('error: ' + ''.join(repr(c)[1:-1] if unsafe(c, '') else c for c in str(e)))
    except ArithmeticError as e:  # only weights far outside anything training produces
        say(f"error: the model's numbers overflowed ({e}); is the checkpoint damaged?")
    except MemoryError:
        say('error: out of memory; try a smaller model, fewer names or --workers 1')
    except Interrupted as e:  # from run_training, which saved the last finished step
        say(f'interrupted: {e.args[1]}')
        return 128 + e.args[0]
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP outside training
        say('interrupted')
        return 128 + (e.args[0] if e.args else signal.SIGINT)
    except BrokenPipeError:  # e.g. `sample | head -3`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 1
