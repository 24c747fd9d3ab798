"""The lab around microdiffusion.py's algorithm: data files, processes, progress, checkpoints,
reports, pictures and the command line. `python microdiffusion.py [command]` hands over to
main() here; the algorithm never needs this module to train or sample."""

import argparse
import collections
import contextlib
import gc
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import unicodedata
from dataclasses import asdict, replace
from html import escape

import microdiffusion as md
from value import Value, topological_order

try:
    import fcntl  # file locks, for one writer per checkpoint (not on Windows)
except ImportError:
    fcntl = None

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'names.txt')
DEFAULT_CHECKPOINT = 'model.json'
FORMAT, VERSION = 'microdiffusion checkpoint', 2  # version 2 added p(length), "lengths"
MODEL_FIELDS = ('model', 'n_embd', 'n_head', 'n_layer', 'block_size', 'denoiser', 'mlp_hidden',
                'text')
# Running text: windows of 32 characters by default (most of what a small model can learn
# about the next character lies within a few words, and a step's cost grows with the window);
# the last tenth of the file is held out; a diffusion model writes a quarter of a window a
# block, keeping the three quarters before it, the end of the text so far, in view.
TEXT_BLOCK, TEXT_HELD_OUT = 32, 0.1
# What the lab takes on, checked before any work: past these a pure-Python run needs days or
# gigabytes. A data file (names.txt is 0.2 MB); a model's weights; one name's attention scores,
# n_layer · n_head · block_size², ~450 bytes each of a training step's graph (2 million: 0.9 GB).
MAX_DATA, MAX_PARAMS, MAX_SCORES, MAX_HISTORY = 16 * 2**20, 200_000, 2_000_000, 100_000
# The largest checkpoint: the weights and Adam's two moments, 3 x 200,000 numbers of at most
# 26 characters, and 100,000 history rows of at most 130: 29 MB, and room for the rest.
MAX_CHECKPOINT = 32 * 2**20

# What every setting may be, on the command line and in a checkpoint alike: (int, low, high)
# inclusive, (float, low, high) strictly between, bool, or the words allowed.
LIMITS = {'n_embd': (int, 1, 1024), 'n_head': (int, 1, 1024), 'n_layer': (int, 1, 64),
          'block_size': (int, 2, 256), 'model': ('diffusion', 'gpt'),
          'denoiser': tuple(md.DENOISERS), 'mlp_hidden': (int, 1, 65536), 'padding': bool,
          'text': bool,
          'init_std': (float, 0, 10), 't_min': (float, 0, 1), 'steps': (int, 1, 10**9),
          'batch_size': (int, 1, 10**6), 'lr': (float, 0, 1e300), 'warmup': (int, 0, 10**9),
          'beta1': (float, 0, 1), 'beta2': (float, 0, 1), 'adam_eps': (float, 0, 1),
          'seed': (int, -2**63, 2**63), 'val_size': (int, 0, 10**6),
          'val_every': (int, 1, 10**9), 'val_names': (int, 0, 10**6)}
SAMPLING_LIMITS = {'steps': (int, 1, 10**6), 'temp_start': (float, 0, 100),
                   'temp_end': (float, 0, 100), 'temperature': (float, 0, 100),
                   'remask': ('confidence', 'random'), 'order': ('any', 'left-to-right'),
                   'length': ('first', 'along')}


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


def too_large(cfg, vocab_size):
    """What puts a model past the lab's limits, or None."""
    shapes = md.DENOISERS[cfg.denoiser][0](cfg, vocab_size)
    if sum(rows * columns for rows, columns in shapes.values()) > MAX_PARAMS:
        return f'more than {MAX_PARAMS:,} parameters'
    if cfg.denoiser == 'transformer' and cfg.n_layer * cfg.n_head * cfg.block_size**2 > MAX_SCORES:
        return f'more than {MAX_SCORES:,} attention scores a name (layers x heads x block²)'
    return None


class UserError(Exception):
    """Something the user can fix (a path, a file, a flag): reported in one line, no traceback."""


class Interrupted(Exception):
    """A signal stopped training: args are (signal number, the step saved or what to say)."""


def say(text, end='\n'):
    """Text on stderr; if stderr has gone away (a closed pipe), the work goes on without it."""
    try:
        print(text, end=end, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):  # so that nothing, even Python at exit, fails on it
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def out(text, end='\n'):
    """Results on stdout, or one clear error if stdout cannot take them."""
    try:
        print(text, end=end, flush=True)
    except UnicodeEncodeError as e:
        raise UserError(f'stdout cannot show {e.object[e.start:e.end]!r} in its encoding, '
                        f'{e.encoding}; set PYTHONIOENCODING=utf-8') from None
    except BrokenPipeError:  # the reader left (`| head`): main ends quietly
        raise
    except OSError as e:
        raise UserError(f'stdout cannot be written ({e.strerror or e})') from None


def on_terminal():
    """Whether stderr is a terminal that can redraw in place (TERM=dumb cannot)."""
    return sys.stderr.isatty() and os.environ.get('TERM') != 'dumb'


# --- Data ------------------------------------------------------------------------------------

def read_file(path, what, limit=MAX_DATA):
    """A file's bytes, at most `limit` of them, or a UserError that says why not."""
    try:
        with open(path, 'rb') as f:
            raw = f.read(limit + 1)
    except OSError as e:
        reason = ('no such file' if isinstance(e, FileNotFoundError) else 'is a folder' if
                  isinstance(e, IsADirectoryError) else f'cannot be read ({e.strerror})')
        raise UserError(f'{path}: {reason}; give {what}') from None
    if len(raw) > limit:
        raise UserError(f'{path}: is larger than {limit // 2**20} MB, more than the lab reads')
    return raw


def read_names(path, longest=LIMITS['block_size'][2] - 1):
    """The names in a UTF-8 file, one a line (\\n, \\r\\n or \\r), stripped, blank lines skipped,
    a byte-order mark never part of a name. Every problem is a UserError."""
    names, raw = [], read_file(path, 'a text file with one name per line')
    for number, line in enumerate(re.split(rb'\r\n|\r|\n', raw), start=1):
        try:
            name = line.decode('utf-8').replace('\ufeff', '').strip()
        except UnicodeDecodeError:
            raise UserError(f'{path}, line {number}: is not UTF-8 text; save it as UTF-8') from None
        shown = name if len(name) <= 30 else name[:27] + '...'
        if len(name) > longest:
            raise UserError(f'{path}, line {number}: {shown!r} has {len(name)} characters, more '
                            f'than the {longest} a name can have; shorten or remove it')
        if any(unsafe(c, '\t') for c in name):
            raise UserError(f'{path}, line {number}: holds a control character, not text (is '
                            'it UTF-16?); save it as UTF-8')
        names += [name] if name else []
    if not names:
        raise UserError(f'{path}: has no names (it is empty or only blank lines)')
    return names


def unsafe(char, allowed):
    """A control character (but those allowed) or half a surrogate pair: unfit to print."""
    return char not in allowed and unicodedata.category(char) in ('Cc', 'Cs')


def split_names(names, val_size):
    """(train, validation), depending only on the set of names: up to val_size distinct names
    (at most a tenth) drawn with a fixed seed, every copy of them left out of training."""
    held_out = random.Random(0).sample(sorted(set(names)), min(val_size, len(set(names)) // 10))
    held = set(held_out)
    return [n for n in names if n not in held], held_out


def read_text(path):
    """A UTF-8 file as one stream of characters, line ends made \\n, no byte-order mark."""
    try:
        text = read_file(path, 'a UTF-8 text file').decode('utf-8')
    except UnicodeDecodeError as e:
        raise UserError(f'{path}: byte {e.start} is not UTF-8 text; save it as UTF-8') from None
    text = text.replace('\ufeff', '').replace('\r\n', '\n').replace('\r', '\n')
    if any(unsafe(c, '\t\n') for c in text):
        raise UserError(f'{path}: holds a control character, not text (is it UTF-16?); save it '
                        'as UTF-8')
    return text


def read_data(path, cfg):
    """Running text, or names that fit the model's block."""
    return read_text(path) if cfg.text else read_names(path, cfg.longest())


def split_data(data, cfg):
    """(what trains, what is held out): names split by split_names; running text cut before
    its last tenth, which is scored in whole windows of block_size characters."""
    if not cfg.text:
        return split_names(data, cfg.val_size)
    cut = len(data) - max(cfg.block_size, int(len(data) * TEXT_HELD_OUT))
    return data[:cut], windows(data[cut:], cfg.block_size)


def windows(text, size):
    """The text cut into whole windows of `size` characters (what is left over is not)."""
    return [text[i:i + size] for i in range(0, len(text) - size + 1, size)]


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


def fingerprint(data):
    """A short hash of the training names or text, so --resume can refuse different data."""
    return hashlib.sha256((data if isinstance(data, str) else '\n'.join(data)).encode(
        'utf-8')).hexdigest()[:16]


def marks(tok):
    """How traces draw (MASK, PAD): '_' and '.', or other marks where the data has those."""
    return ('_' if '_' not in tok.chars else '▒'), ('.' if '.' not in tok.chars else '·')


def show(tokens, tok, colour=False):
    """A sequence as text, MASK and PAD drawn as marks(tok), dimmed on a terminal if colour."""
    mask_mark, pad_mark = marks(tok)
    if colour:
        mask_mark, pad_mark = f'\033[2;33m{mask_mark}\033[0m', f'\033[2m{pad_mark}\033[0m'
    return ''.join([mask_mark if t == tok.MASK else pad_mark if t == tok.PAD else tok.chars[t]
                    for t in tokens])


# --- Processes: the same results from one process or many ------------------------------------

# The signals that stop work cleanly: Ctrl-C, kill, a closed terminal (where it exists).
STOP_SIGNALS = [getattr(signal, s) for s in ('SIGINT', 'SIGTERM', 'SIGHUP') if hasattr(signal, s)]
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
TRAIN_PROCESSES = 1 if sys.implementation.name == 'pypy' else CPUS  # PyPy pickles slowly


class Workers:
    """Shares of work done in order in n processes (1: in this one, no pool), one under a
    debugger (a worker's breakpoint would fire unseen). A share carries its inputs and random
    seeds, so results never depend on n."""

    def __init__(self, n):
        monitoring = getattr(sys, 'monitoring', None)  # 3.12's debuggers
        if n > 1 and (sys.gettrace() is not None or (monitoring is not None and
                      monitoring.get_tool(monitoring.DEBUGGER_ID) is not None)):
            say('a debugger is attached: running in this one process')
            n = 1
        self.n, self.pool = n, None

    def __enter__(self):
        if self.n > 1:
            self.pool = multiprocessing.Pool(self.n, _start_worker, (os.getpid(),))
        return self

    def __exit__(self, *exc):
        if self.pool:
            self.pool.terminate()
            self.pool.join()

    def map(self, kind, model, shares, stop=lambda: 0):
        """_job((kind, model, share)) for each share, in order, at most two a process in flight
        (memory stays flat however many); raises Interrupted while waiting if stop() says so."""
        jobs = ((kind, model, share) for share in shares)
        if not self.pool:
            yield from map(_job, jobs)
            return
        pending = collections.deque()
        while True:
            for job in jobs:
                pending.append(self.pool.apply_async(_job, (job,)))
                if len(pending) >= 2 * self.n:
                    break
            if not pending:
                return
            result = pending.popleft()
            while not result.ready():
                result.wait(0.1)
                if stop():
                    raise Interrupted(stop())
            yield result.get()


def _start_worker(parent):
    """A worker leaves signals to the main process, and ends within a second of its death."""
    for number in STOP_SIGNALS:  # not the main process's handlers
        signal.signal(number, signal.SIG_IGN if number == signal.SIGINT else signal.SIG_DFL)
    without_cycle_collector()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def without_cycle_collector():
    """Values make no reference cycles, so CPython frees each graph by reference counting and
    its cyclic collector only rescans live Values (10% of a step). PyPy needs its collector."""
    if sys.implementation.name == 'cpython':
        gc.disable()


_replicas = {}  # in a worker: a Model of Values for each configuration seen, made once


def _local(model):
    """(a model of Values, its flattened Values): the model itself if it holds Values, else
    this process's copy set to its floats (making 6,848 Values a step cost 10% of a name)."""
    if isinstance(next(iter(model.params.values()))[0][0], Value):
        return model, md.flatten(model.params)
    key = repr(model.cfg) + repr(model.tok.chars)
    if key not in _replicas:
        params = {name: [[Value(x) for x in row] for row in rows]
                  for name, rows in model.params.items()}
        _replicas[key] = md.Model(model.cfg, model.tok, params, model.denoiser), md.flatten(params)
    replica, values = _replicas[key]
    replica.lengths = model.lengths
    for name, rows in model.params.items():
        for row, floats in zip(replica.params[name], rows):
            for p, x in zip(row, floats):
                p.data = x
    return replica, values


# How a name is scored: an estimate of the NELBO, or an exact -log p in one order.
ESTIMATES = {'random orders': md.nelbo,
             'one pass': lambda model, tokens, rng, seen: md.nelbo_one_pass(model, tokens, rng),
             'left-to-right': lambda model, tokens, rng, seen: md.left_to_right_nll(model, tokens),
             'gpt': lambda model, tokens, rng, seen: md.gpt_loss(model, tokens, seen)}


def _job(job):
    """A share of names' gradients, samples or scores (see ESTIMATES), here or in a worker."""
    kind, model, items = job
    if kind == 'gradients':
        model, values = _local(model)
        return [md.name_gradient(model, values, item) for item in items]
    if kind == 'samples':  # items: (seed, how, a list to trace the steps in or None)
        return [(model.tok.decode(md.sample_tokens(model, random.Random(seed), how, trace)),
                 trace) for seed, how, trace in items]
    return [ESTIMATES[kind](model, tokens, random.Random(seed), seen)
            for tokens, seed, seen in items]


def gradients_from(workers, model, stop):
    """train_step's gradients(items): shares of at most 8 names, on the model's own Values
    in this process or on copies in the workers, stopping between names if stop() says so."""
    def gradients(items):
        size = min(8, -(-len(items) // workers.n))
        for share in workers.map('gradients', model if workers.n == 1 else model.frozen(),
                                 [items[i:i + size] for i in range(0, len(items), size)], stop):
            for result in share:
                if stop():
                    raise Interrupted(stop())
                yield result
    return gradients


def nelbo_estimates(model, names, seed, workers, kind='random orders', progress=None, seen=0):
    """Each name's score in nats (see ESTIMATES), each from its own seeded random generator,
    in shares of at most 50 names, so that progress shows however many there are; a window of
    text's, with seen > 0, for what follows its first `seen` characters."""
    rng, estimates = random.Random(f'{seed}:nelbo'), []
    items = [(model.encode(name), rng.getrandbits(64), seen) for name in names]
    size = max(1, min(50, len(items) // 10))
    for share in workers.map(kind, model.frozen(),
                             (items[i:i + size] for i in range(0, len(items), size))):
        estimates += share
        if progress:
            progress.update(len(estimates))
    return estimates


def sample_names(model, n, seed, how, workers, trace=False):
    """n (name, trace) pairs, streamed as they are made: the same names as md.sample()."""
    rng, frozen = random.Random(f'{seed}:sample'), model.frozen()
    if how.pattern and how.pattern[1] is not None and model.length_first:  # once, not per name
        how.lengths = md.pattern_lengths(frozen, *how.pattern)
    shares = ([(rng.getrandbits(64), how, [] if trace else None) for _ in range(min(4, n - i))]
              for i in range(0, n, 4))
    for share in workers.map('samples', frozen, shares):
        yield from share


# --- Training in the lab: the algorithm's step, with signals, validation, progress, saving ---

@contextlib.contextmanager
def handling(numbers, handler):
    """Within it, these signals go to handler; after it, to whatever had them before."""
    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, before in previous.items():
            signal.signal(number, before)


def run_training(model, train_names, val_names, data_fingerprint, checkpoint, workers,
                 state=None, stop_after=None, stop=lambda: 0, data=None):
    """Train model.params in place up to model.cfg.steps (continuing from `state`), saving the
    checkpoint at every validation and at the end. Once stop() names a signal, the step under
    way is dropped (Adam untouched), the last one saved, and Interrupted raised; a loss that is
    not finite raises UserError, the checkpoint as it was. stop_after (tests) ends it early."""
    cfg, adam = model.cfg, md.Adam(md.flatten(model.params), model.cfg)
    step, saved_at, smooth, weight, history = 0, None, 0.0, 0.0, []  # saved_at: on disk
    if state:
        step = saved_at = state['step']
        adam.t, adam.m, adam.v = state['adam_t'], state['adam_m'], state['adam_v']
        (smooth, weight), history = state['smoothed'], list(state['history'])
    # history: the run's curve, [step, loss, smoothed loss, validation or None, seconds] rows
    batches, progress = md.Batches(train_names, cfg), Progress(cfg.steps, 'step', step)
    val, val_names = None, val_names[:cfg.val_names]
    began = time.perf_counter() - (history[-1][4] if history else 0.0)
    # The loss covers noise levels from t_min up (see md.diffusion_loss); validation's NELBO
    # covers them all and the length: it sits above the loss without any over-fitting.
    labels = (('loss', 'val NLL ') if cfg.model == 'gpt' else
              (f'loss(t>={cfg.t_min:g})', 'val NELBO ~'))

    def save():
        try:
            save_checkpoint(checkpoint, model, {
                'step': step, 'settings': asdict(cfg), 'data_fingerprint': data_fingerprint,
                'data': data, 'adam_t': adam.t, 'adam_m': adam.m, 'adam_v': adam.v,
                'history': history, 'smoothed': [smooth, weight]})
        except OSError as e:
            kept = 'nothing was saved' if saved_at is None else f'it still holds step {saved_at}'
            raise UserError(f'{checkpoint}: could not save step {step} ({e.strerror or e}); '
                            f'{kept}') from None

    gradients = gradients_from(workers, model, stop)
    try:
        while step < cfg.steps and step != stop_after and not stop():
            try:
                loss = md.train_step(model, adam, batches.at(step), step, gradients)
                done = step + 1
                validated = val_names and (done % cfg.val_every == 0 or done == cfg.steps)
                if validated:  # one pass a name, always the same seed: only the model changes
                    val = statistics.fmean(nelbo_estimates(model, val_names, 0, workers, (
                        'gpt' if cfg.model == 'gpt' else 'one pass')))
            except Interrupted:
                break
            except ArithmeticError as e:
                kept = 'is untouched' if saved_at is None else f'keeps step {saved_at}'
                raise UserError(f'training diverged at step {step + 1} ({e}); {checkpoint} '
                                f'{kept}; try a smaller --lr') from None
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
    if stop() and step < cfg.steps:
        raise Interrupted(stop(), step)
    return history


class Progress:
    """One status line on stderr: how far, the caller's figures, the speed and the time left.
    Rewritten in place on a terminal; elsewhere, a line at every tenth and every minute."""

    def __init__(self, total, unit, start=0):
        self.total, self.unit, self.start = total, unit, start
        self.live, self.shown = on_terminal(), False
        self.began = self.said = time.perf_counter()

    def update(self, done, detail='', force=False):
        now = time.perf_counter()
        speed = (done - self.start) / max(now - self.began, 1e-9)
        left = int((self.total - done) / max(speed, 1e-9))
        line = (f'{self.unit} {done}/{self.total}  {detail}{"  " if detail else ""}{speed:.1f} '
                f'{self.unit}s/s  {f"{left // 60}m{left % 60:02d}s" if left >= 60 else f"{left}s"}'
                ' left')
        if self.live:
            self.shown = True
            say('\r' + line + '\033[K', end='')
        elif force or done == self.total or done % max(1, self.total // 10) == 0 or \
                now - self.said >= 60:
            self.said = now
            say(line)

    def finish(self):
        if self.shown:
            self.shown = False
            say('')


# --- Files: checkpoints, pictures, one writer at a time -------------------------------------

def save_checkpoint(path, model, training=None):
    """One JSON file: the vocabulary, the model's shape, p(length), the weights [out][in], and
    what --resume needs. Floats are written with repr, so they read back exactly."""
    doc = {'format': FORMAT, 'version': VERSION, 'chars': model.tok.chars,
           'config': {f: getattr(model.cfg, f) for f in MODEL_FIELDS},
           'params': md.as_floats(model.params)}
    doc.update({'lengths': model.lengths} if model.lengths else {})
    doc.update({'training': training} if training else {})
    write_atomic(path, json.dumps(doc, allow_nan=False))


def write_atomic(path, text, flag=None):
    """Write a temporary file beside the target, then rename it over the target: a crash at
    any moment leaves the old file or the new one, never half of one. A symlink is followed
    (its target replaced, the link kept); an existing file keeps its mode. With a flag (a
    picture's, written after the work), a failure is a UserError that says so."""
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode & 0o7777 if os.path.exists(target) else 0o644
        fd, tmp = temporary_beside(target)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        if flag is None:
            raise
        raise UserError(f'{flag} {path}: could not be written ({e.strerror or e}); the rest '
                        'of the work is done') from None


def temporary_beside(target):
    return tempfile.mkstemp(dir=os.path.dirname(target),
                            prefix='.' + os.path.basename(target) + '.', suffix='.tmp')


def check_outputs(outputs, inputs=()):
    """Before any work: no output (flag, path) the same file as another or as an input, by any
    name; each one a file we may write, replacing nothing but a checkpoint or a picture."""
    seen = [(flag, path) for flag, path in inputs if path is not None]
    for flag, path in [(flag, path) for flag, path in outputs if path is not None]:
        for other, other_path in seen:
            if os.path.realpath(path) == os.path.realpath(other_path) or (os.path.exists(
                    path) and os.path.exists(other_path) and os.path.samefile(path, other_path)):
                raise UserError(f'{flag} {path}: is the same file as {other} {other_path}; '
                                f'choose another {flag}')
        seen.append((flag, path))
        noun, target = 'checkpoint' if flag == '--checkpoint' else 'picture', os.path.realpath(path)
        there = os.path.exists(target)
        problem = ('is a folder' if path.endswith(('/', os.sep)) or os.path.isdir(target) else
                   'is not a regular file' if there and not os.path.isfile(target) else None)
        if problem:
            raise UserError(f'{flag} {path}: {problem}; give a file name for the {noun}')
        if there and not os.stat(target).st_mode & 0o222:
            raise UserError(f'{flag} {path}: is read-only; make it writable or choose another '
                            f'{flag}')
        try:
            with open(target if there else os.devnull, 'rb') as f:
                head = f.read(64).lstrip()  # what is there: never replace data or a document
            fd, tmp = temporary_beside(target)  # write_atomic's very name: too long fails here
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise UserError(f'{flag} {path}: cannot write a {noun} there ({e.strerror}); '
                            f'choose another {flag}') from None
        if head and not head.startswith(b'{' if noun == 'checkpoint' else b'<'):
            raise UserError(f'{flag} {path}: holds something other than a {noun}; choose '
                            f'another {flag}, or remove it first')


@contextlib.contextmanager
def one_writer(checkpoint):
    """A lock beside the checkpoint while training writes it: a second run on the same file is
    refused while the first lives. A process's lock ends with it: a killed run's never blocks."""
    if fcntl is None:
        yield
        return
    target = os.path.realpath(checkpoint)
    path = os.path.join(os.path.dirname(target), '.' + os.path.basename(target) + '.lock')
    while True:
        try:
            lock = open(path, 'a')
        except OSError as e:
            raise UserError(f'{path}: cannot lock {checkpoint} ({e.strerror})') from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise UserError(f'{checkpoint}: another run is training it now; wait for it to end, '
                            'or choose another --checkpoint') from None
        if os.path.exists(path) and os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
            break  # else its last holder removed it as we opened it: lock the new one
        lock.close()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        lock.close()


def load_checkpoint(path, resuming=False, flag='--checkpoint'):
    """(model, the training section or None): what sample and eval use is checked here, and
    what only --resume needs when resuming."""
    if not os.path.isfile(path):
        raise UserError(f'{flag} {path}: ' + ('is not a regular file, so not a checkpoint' if
                        os.path.exists(path) else 'no such checkpoint; train one first '
                        '(python microdiffusion.py train) or give another'))

    def need(condition, what):
        if not condition:
            raise UserError(f'{path}: not a valid microdiffusion checkpoint ({what})')

    def reject(constant):  # NaN or Infinity
        raise UserError(f'{path}: holds {constant}, not a finite number; it is damaged')
    try:
        doc = json.loads(read_file(path, 'a checkpoint', MAX_CHECKPOINT).decode('utf-8'),
                         parse_constant=reject)
    except (ValueError, RecursionError) as e:  # not UTF-8 or JSON, 5,000 digits, deep nesting
        reason = 'nested too deeply' if isinstance(e, RecursionError) else str(e)[:80]
        raise UserError(f'{path}: is not a microdiffusion checkpoint (not JSON: {reason})') \
            from None
    need(isinstance(doc, dict) and doc.get('format', FORMAT) == FORMAT,
         'not a JSON object with "chars", "config" and "params"')
    chars = list(doc['chars']) if isinstance(doc.get('chars'), str) else doc.get('chars')
    allowed = '\t\n' if isinstance(doc.get('config'), dict) and doc['config'].get('text') is True \
        else '\t'  # names print one a line: no newline in them
    need(isinstance(chars, list) and chars and all(
        isinstance(c, str) and len(c) == 1 and not unsafe(c, allowed) for c in chars)
        and len(set(chars)) == len(chars),
        '"chars" must list distinct single characters, no control characters but tab')
    shape, cfg = doc.get('config'), md.Config()
    need(isinstance(shape, dict), 'no "config"')
    for name in MODEL_FIELDS:
        setattr(cfg, name, shape.get(name, getattr(cfg, name)))
        need(fits(getattr(cfg, name), LIMITS[name]), f'config {name} = {shape.get(name)!r:.40}')
    cfg.padding = cfg.model == 'diffusion' and not cfg.text and 'lengths' not in doc  # older
    need(cfg.n_embd % cfg.n_head == 0,
         f'config: n_embd {cfg.n_embd} is not a multiple of n_head {cfg.n_head}')
    need(cfg.model == 'diffusion' or cfg.denoiser == 'transformer', 'a GPT is the transformer')
    tok = md.Tokenizer(chars)
    need(not too_large(cfg, tok.vocab_size), f'config describes {too_large(cfg, tok.vocab_size)}')
    shapes, params = md.DENOISERS[cfg.denoiser][0](cfg, tok.vocab_size), doc.get('params')
    need(isinstance(params, dict) and set(params) == set(shapes),
         f'"params" must have exactly {", ".join(sorted(shapes))}')
    for name, (n_rows, n_columns) in shapes.items():
        need(isinstance(params[name], list) and len(params[name]) == n_rows and all(
            isinstance(row, list) and len(row) == n_columns and numbers(row, 1e6)
            for row in params[name]), f'{name} should be {n_rows} x {n_columns} finite numbers '
             'of at most 1e6')
    lengths = doc.get('lengths')
    model = md.Model(cfg, tok, {name: [[Value(float(x)) for x in row] for row in rows]
                                for name, rows in params.items()}, lengths=lengths)
    need(not model.length_first or isinstance(lengths, list) and len(lengths) ==
         cfg.block_size and numbers(lengths, 1) and lengths[0] == 0 and min(lengths[1:]) > 0
         and abs(sum(lengths) - 1) < 1e-9, f'"lengths" must be {cfg.block_size} probabilities '
         'adding up to 1: 0 for the empty name, above 0 for every other length')
    training = doc.get('training') if isinstance(doc.get('training'), dict) else None
    if resuming and training:
        check_training_state(training, len(md.flatten(model.params)), need)
        need(all(training['settings'][name] == getattr(cfg, name)
                 for name in MODEL_FIELDS + ('padding',)),
             '"training" settings disagree with "config"')
    return model, training


def check_training_state(training, n_params, need):
    """need(...) all that --resume continues from, every setting within LIMITS. A setting an
    older version recorded that no longer shapes training is dropped; one that did not exist
    yet takes that version's value (before GPT: diffusion; before p(length): --padding)."""
    settings = training.get('settings')
    need(isinstance(settings, dict), '"training" must hold the run\'s "settings"')
    settings.setdefault('model', 'diffusion')
    settings.setdefault('padding', settings['model'] == 'diffusion')
    settings.setdefault('text', False)
    missing = sorted(set(LIMITS) - set(settings))
    need(not missing, f'"training" settings lack {", ".join(missing)}')
    training['settings'] = settings = {name: settings[name] for name in LIMITS}
    for name, value in settings.items():
        need(fits(value, LIMITS[name]), f'"training" setting {name} = {value!r:.40} is out of '
             'range')
    step, history = training.get('step'), training.setdefault('history', [])
    smoothed = training.setdefault('smoothed', [0.0, 0.0])  # older checkpoints kept neither
    need(fits(step, (int, 0, settings['steps'])) and fits(training.get('adam_t'), (int, 0, 10**9))
         and isinstance(training.get('data_fingerprint'), str) and all(
             isinstance(training.get(key), list) and len(training[key]) == n_params and
             numbers(training[key], 1e12) for key in ('adam_m', 'adam_v')) and isinstance(
             smoothed, list) and len(smoothed) == 2 and numbers(smoothed, 1e12),
         f'"training" needs step, adam_t, data_fingerprint, adam_m and adam_v ({n_params:,} '
         'numbers each) and smoothed ([average, weight]), each in range')
    need(isinstance(history, list) and len(history) <= MAX_HISTORY and all(
        isinstance(row, list) and len(row) == 5 and fits(row[0], (int, 1, step))
        and numbers(row[1:3] + row[4:] + [x for x in row[3:4] if x is not None], 1e12)
        for row in history) and [row[0] for row in history] == sorted(r[0] for r in history),
        '"training" history must be rows of [step, loss, smoothed, validation, seconds] up '
        'to the step saved, in order')


# --- Reports and pictures --------------------------------------------------------------------

def sample_report(samples, train_names, held_out, block_size):
    """Lines describing sampled names against the data: new, unique, length."""
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
            f'mean length {statistics.fmean(map(len, samples)):.2f} (data '
            f'{statistics.fmean(map(len, data)):.2f}), length histogram total variation {tv:.3f}',
            'length    data  samples   (each # is 2% of names)'] + [
        f'{length:6d}  {a:6.1%}  {b:6.1%}   {"#" * round(a * 50):<20s}|{"#" * round(b * 50)}'
        for length, (a, b) in enumerate(zip(theirs, mine)) if a or b]


def score_line(model, names, label, workers):
    """The mean score of names under a model that did not make them (a GPT's exact -log p, or
    the NELBO); names it cannot hold are left out and counted."""
    fit = [n for n in names if len(n) <= model.cfg.longest() and set(n) <= set(model.tok.chars)]
    if not fit:
        return f'{label}: none it can score'
    mean = statistics.fmean(nelbo_estimates(model, fit, 0, workers, 'gpt' if model.cfg.model
                                            == 'gpt' else 'random orders'))
    left_out = f' ({len(names) - len(fit)} it cannot hold left out)' * (len(fit) < len(names))
    return f'{label} {mean:.2f} nats/name{left_out}'


def curve_chart(history, unit='name', width=60, height=10):
    """A text chart of a run's history: the smoothed loss (·) and validation (o) by step."""
    points = [(row[0], row[2], '·') for row in history]
    points += [(row[0], row[3], 'o') for row in history if row[3] is not None]
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    last, span = history[-1][0], (high - low) or 1.0
    grid = [[' '] * width for _ in range(height)]
    for step, value, mark in points:
        x, y = round((step / last) * (width - 1)), round((high - value) / span * (height - 1))
        grid[y][x] = 'o' if grid[y][x] == 'o' else mark
    return [f'{high - span * r / (height - 1):7.2f} |' + ''.join(row)
            for r, row in enumerate(grid)] + [
        '        +' + '-' * width, f'         step 0{str(last):>{width - 6}}',
        f'         · smoothed loss   o validation (nats per {unit})']


def curve_svg(history, unit='name'):
    """The same chart as a self-contained SVG picture."""
    w, h, pad = 600, 300, 50
    values = [row[2] for row in history] + [row[3] for row in history if row[3] is not None]
    low, high, last = min(values), max(values), history[-1][0]

    def xy(step, value):
        return (pad + step / last * (w - 2 * pad),
                h - pad - (value - low) / ((high - low) or 1.0) * (h - 2 * pad))
    loss = ' '.join('%.1f,%.1f' % xy(row[0], row[2]) for row in history)
    dots = ''.join('<circle cx="%.1f" cy="%.1f" r="4" fill="#d62728"/>' % xy(row[0], row[3])
                   for row in history if row[3] is not None)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'font-family="sans-serif" font-size="12"><rect width="{w}" height="{h}" fill="white"/>'
            f'<polyline points="{loss}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>{dots}'
            f'<path d="M{pad} {pad}V{h - pad}H{w - pad}" fill="none" stroke="black"/>'
            f'<text x="{pad}" y="{h - pad + 16}">0</text>'
            f'<text x="{w - pad}" y="{h - pad + 16}" text-anchor="end">step {last}</text>'
            f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{high:.1f}</text>'
            f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">{low:.1f}</text>'
            f'<text x="{w / 2}" y="{pad - 20}" text-anchor="middle">smoothed loss (blue) and '
            f'validation (red), nats per {unit}</text></svg>\n')


def frames(trace, tok, size, start=()):
    """A name's states as pictures show them, from `start` (a pattern's fixed beginning, blanks
    after it) through each step of its trace, all on `size` positions; whatever follows the
    first PAD is not part of the name, so it is drawn as PAD."""
    states = [list(start) + [tok.MASK] * (size - len(start))] + [t for *_, t in trace]
    ends = [state.index(tok.PAD) if tok.PAD in state else len(state) for state in states]
    return [state[:end] + [tok.PAD] * (size - end) for state, end in zip(states, ends)]


def reverse_svg(rows, tok, seconds_per_frame=0.25):
    """An animated SVG of the reverse process: each row a name's frames, shown in turn by
    SVG's own animation (no script), the last one held, then again from the start."""
    mask_mark, pad_mark = marks(tok)
    count = max(len(row) for row in rows) + 6  # the finished names stay a while
    width, height, groups = 40 + 14 * len(rows[0][0]), 30 + 24 * len(rows), []
    for k in range(count):
        texts = ''.join(f'<text x="20" y="{30 + 24 * r}">' + ''.join(
            f'<tspan fill="#bbb">{escape(mask_mark)}</tspan>' if t == tok.MASK else
            f'<tspan fill="#ddd">{escape(pad_mark)}</tspan>' if t == tok.PAD else
            escape(tok.chars[t]) for t in row[min(k, len(row) - 1)]) + '</text>'
            for r, row in enumerate(rows))
        # frame k is visible from k/count to (k + 1)/count of the loop; the last to its end
        times = [0, k / count, (k + 1) / count][(k == 0):3 - (k == count - 1)]
        shown = ['hidden', 'visible', 'hidden'][(k == 0):3 - (k == count - 1)]
        groups.append(f'<g visibility="hidden"><animate attributeName="visibility" '
                      f'calcMode="discrete" values="{";".join(shown)}" keyTimes="'
                      f'{";".join(f"{x:.4g}" for x in times)}" '
                      f'dur="{count * seconds_per_frame:.2f}s" repeatCount="indefinite"/>'
                      f'{texts}</g>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="20" xml:space="preserve">'
            f'<rect width="{width}" height="{height}" fill="white"/>{"".join(groups)}</svg>\n')


def animate(block, fps):
    """Draw a block of rows in place on stderr, frame by frame, each row one list of painted
    frames per model side by side, a finished row keeping its last frame. SIGTERM and SIGHUP
    end it as Ctrl-C does, so the terminal is always given back as it was."""
    def interrupt(number, frame):
        raise KeyboardInterrupt(number)
    with handling(STOP_SIGNALS[1:], interrupt):
        say('\033[?25l', end='')  # hide the cursor while drawing
        try:
            for k in range(max(len(frames) for row in block for frames in row)):
                say(f'\033[{len(block)}A' * (k > 0) + ''.join(  # back to the block's first line
                    '\r\033[K' + '    '.join(f[min(k, len(f) - 1)] for f in row) + '\n'
                    for row in block), end='')
                time.sleep(1 / fps)
        finally:
            say('\033[0m\033[?25h', end='')  # the terminal as it was


# --- The command line ------------------------------------------------------------------------

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


def file_name(text):
    """An argparse type for a path: not an empty one."""
    if not text:
        raise argparse.ArgumentTypeError('give a file name, not an empty one')
    return text


TRAIN_SETTINGS = ('steps', 'model', 'batch_size', 'lr', 'seed', 'denoiser', 'n_embd', 'n_head',
                  'n_layer', 'block_size', 'mlp_hidden', 'padding', 'text')
SAMPLE_SETTINGS = ('steps', 'temp_start', 'temp_end', 'temperature', 'remask', 'order', 'length')
# What a left-to-right sampler (GPT's, or --order left-to-right) has no use for: it draws every
# position, the end too, in order at the one --temperature, not by confidence.
NOT_LEFT_TO_RIGHT = ('temp_start', 'temp_end', 'remask', 'length')
FILE, SWITCH, SEED = dict(type=file_name), dict(action='store_true'), dict(type=int, default=0)
WORKERS = dict(type=setting((int, 1, 1024)), default=CPUS,
               help='processes (default: every CPU; results do not depend on it)')
PADDING = 'the older model: names PAD-filled to the block, every PAD erased and predicted'
SWITCHES = {'padding': PADDING, 'text': 'the data is running text (a book, code), not a list: '
            f'windows of --block-size characters ({TEXT_BLOCK})'}
# Each command: what it does, the settings it takes as flags (LIMITS checks them), its own flags
COMMANDS = {
    'train': ('train a model and save a checkpoint', TRAIN_SETTINGS, [
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
    'bench': ('time training steps, forward passes, samples', (), [
        ('--data', dict(FILE, default=DEFAULT_DATA, help='names to time (names.txt)')),
        ('--repeats', dict(type=setting((int, 3, 10**6)), default=30, help='timings (30)'))])}


def build_parser():
    parser = Parser(prog='microdiffusion.py', description='Masked text diffusion on names, in '
                    'pure Python. With no command: train on names.txt, save model.json, print '
                    '20 names.')
    commands = parser.add_subparsers(dest='command', metavar='command')
    for name, (about, settings, flags) in COMMANDS.items():
        sub = commands.add_parser(name, help=about, description=about[:1].upper() + about[1:] + (
            '. A GPT, or --order left-to-right, draws one position at a time at --temperature, '
            'and refuses --temp-start, --temp-end, --remask and --length.' * (name == 'sample')))
        if settings is not None:  # all but forward read or write a checkpoint
            sub.add_argument('--checkpoint', **FILE, default=DEFAULT_CHECKPOINT,
                             help='the model file (model.json)')
        limits, defaults = (SAMPLING_LIMITS, md.Sampling) if name == 'sample' else (
            LIMITS, md.Config)
        for setting_name in settings or ():
            rule = limits[setting_name]  # an unset flag is None: the default, or the resumed run's
            options = (dict(action='store_const', const=True, help=SWITCHES[setting_name])
                       if rule is bool else
                       dict(choices=rule) if isinstance(rule[0], str) else dict(type=setting(rule)))
            sub.add_argument('--' + setting_name.replace('_', '-'),
                             **{'help': f'({getattr(defaults, setting_name)})', **options})
        for flag, options in flags:
            sub.add_argument(flag, **options)
    return parser


# --- train -----------------------------------------------------------------------------------

def run_lab(args):
    """python microdiffusion.py: train on names.txt with the defaults, then print 20 names."""
    model = run_train(build_parser().parse_args(['train']), '; 20 new names:')
    with Workers(min(CPUS, 4)) as workers:
        for name, _ in sample_names(model, 20, 0, md.Sampling(), workers):
            out(name)


def run_train(args, then=''):
    """Train a new model, or continue one (--resume), into --checkpoint; return the model."""
    model, state, names = resumed(args) if args.resume else model_from_flags(args)
    check_outputs([('--checkpoint', args.checkpoint), ('--curve', args.curve)],
                  [('--data', args.data)])
    cfg, stops = model.cfg, []  # a signal is only noted: training stops at a safe place
    train_names, held_out = split_data(names, cfg)
    what = (f'{len(train_names):,} characters ({len(held_out):,} windows held out)' if cfg.text
            else f'{len(train_names):,} names ({len(held_out):,} held out)')
    with one_writer(args.checkpoint), Workers(min(args.workers, cfg.batch_size)) as workers, \
            handling(STOP_SIGNALS, lambda number, frame: stops.append(number)):
        shape = (f'{cfg.n_layer} layers of {cfg.n_embd}, {cfg.n_head} heads' if
                 cfg.denoiser == 'transformer' else f'{cfg.mlp_hidden} hidden units')
        say(f'resuming {args.checkpoint} at step {state["step"]} of {cfg.steps}' if state else
            f'training a {cfg.model} {cfg.denoiser} ({shape}, {cfg.block_size} positions'
            f'{", PAD-filled" * (cfg.padding and cfg.model == "diffusion")}; '
            f'{len(md.flatten(model.params)):,} parameters) on {what} for {cfg.steps} steps '
            f'of {cfg.batch_size}')
        try:
            history = run_training(model, train_names, held_out, fingerprint(train_names),
                                   args.checkpoint, workers, state, data=os.path.abspath(
                                       args.data), stop=lambda: stops[0] if stops else 0)
        except Interrupted as e:
            raise Interrupted(e.args[0], f'step {e.args[1]} saved in {args.checkpoint}; '
                              f'continue with "{resume_command(args)}"') from None
    unit = 'window' if cfg.text else 'name'
    for line in curve_chart(history, unit):
        say(line)
    if args.curve:
        write_atomic(args.curve, curve_svg(history, unit), '--curve')
        say(f'saved the training curve in {args.curve}')
    say(f'saved {args.checkpoint}{then}')
    return model


def resume_command(args):
    """The command that continues a stopped run, as it runs from this folder."""
    python = shutil.which(os.path.basename(sys.executable))  # its name, if that finds it
    python = os.path.basename(python) if python and os.path.samefile(
        python, sys.executable) else sys.executable
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == 'microdiffusion.py' else \
        'microdiffusion.py'
    return shlex.join([python, script, 'train', '--resume', '--checkpoint', args.checkpoint]
                      + ['--data', args.data] * (args.data != DEFAULT_DATA))


def new_model(cfg, data):
    """A fresh model for these names (or text): their characters, and p(length) if it draws
    one, counted on the training names."""
    lengths = None if cfg.text else md.length_odds(split_names(data, cfg.val_size)[0],
                                                   cfg.block_size)
    return md.Model.new(cfg, md.Tokenizer.from_names(data), lengths)


def model_from_flags(args):
    """(a fresh model, no state, the names) for train's flags, every one checked first."""
    cfg = md.Config(**{name: getattr(args, name) for name in TRAIN_SETTINGS
                       if getattr(args, name) is not None})
    if cfg.model == 'gpt' and (cfg.denoiser != 'transformer' or cfg.padding):
        raise UserError(f'--{"padding" if cfg.padding else "denoiser mlp"}: a GPT is the '
                        'transformer, reading left to right to the end')
    if cfg.n_embd % cfg.n_head:
        raise UserError(f'--n-embd {cfg.n_embd} must be a multiple of --n-head {cfg.n_head}: '
                        'each head takes n_embd / n_head of the numbers')
    if cfg.text and cfg.padding:
        raise UserError('--padding: running text has no ends to pad')
    if cfg.text:
        names, cfg.block_size = read_text(args.data), args.block_size or TEXT_BLOCK
        if len(names) < 2 * cfg.block_size:  # a window to train on, and one held out
            raise UserError(f'{args.data}: has {len(names)} characters; running text needs at '
                            f'least {2 * cfg.block_size}, two windows of --block-size')
    else:
        names = read_names(args.data, *[cfg.longest()] * (args.block_size is not None))
    if args.block_size is None and not cfg.text:  # the longest name and its end (or a start)
        cfg.block_size = max(map(len, names)) + 1
    problem = too_large(cfg, len(set(''.join(names))) + 2)
    if problem:
        raise UserError(f'that model would have {problem}; choose a smaller --n-embd, '
                        '--n-head, --n-layer or --mlp-hidden, or shorter names')
    return new_model(cfg, names), None, names


def resumed(args):
    """(the checkpoint's model, its training state, the names): the run's settings restored,
    every flag checked against them."""
    model, state = load_checkpoint(args.checkpoint, resuming=True)
    if state is None:
        raise UserError(f'{args.checkpoint}: has no training state to resume from (only a '
                        'checkpoint written by train holds one)')
    names = read_data(args.data, model.cfg)
    if md.Tokenizer.from_names(names).chars != model.tok.chars:
        raise UserError(f"{args.data}: its characters differ from the checkpoint's vocabulary; "
                        'resume with the data it was trained on')
    if fingerprint(split_data(names, md.Config(**state['settings']))[0]) != \
            state['data_fingerprint']:
        raise UserError(f'{args.data}: is not the data {args.checkpoint} was trained on; '
                        'resume with the same file')
    cfg = model.cfg = md.Config(**state['settings'])  # every setting of the run: it goes on
    for name in TRAIN_SETTINGS[1:]:  # but --steps may extend it
        if getattr(args, name) not in (None, getattr(cfg, name)):
            raise UserError(f'--{name.replace("_", "-")}: a resumed run keeps its checkpoint\'s '
                            f'{getattr(cfg, name)}; start a new run to change it')
    if args.steps is not None and args.steps < state['step']:
        raise UserError(f'--steps {args.steps}: the checkpoint is already at step {state["step"]}')
    cfg.steps = args.steps or cfg.steps
    if state['step'] >= cfg.steps:
        raise UserError(f'{args.checkpoint}: already trained for {cfg.steps} steps; pass '
                        '--steps with a larger total to continue')
    return model, state, names


# --- sample ----------------------------------------------------------------------------------

def sampling_from(args, model):
    """The Sampling the flags ask for, a pattern included, or the reason it cannot be."""
    how = md.Sampling(**{name: getattr(args, name) for name in SAMPLE_SETTINGS
                         if getattr(args, name) is not None})
    gpt = model.cfg.model == 'gpt'
    for name in NOT_LEFT_TO_RIGHT:
        if getattr(args, name) is not None and (gpt or how.order == 'left-to-right'):
            raise UserError(f'--{name.replace("_", "-")}: ' + (
                'a GPT' if gpt else '--order left-to-right') + ' draws every position in order at '
                'the one --temperature, the end included; it has no schedule and re-masks nothing')
    if args.length == 'along' and model.lengths:
        raise UserError('--length along: this model draws its length from p(length) before any '
                        'letter; only a --padding model finds its end along with the letters')
    try:
        how.pattern = args.pattern and md.parse_pattern(args.pattern, model)
    except ValueError as e:
        raise UserError(str(e)) from None
    return how


def run_sample(args):
    model, state = load_checkpoint(args.checkpoint)
    if model.cfg.text:
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
    scorer = args.score_with and load_checkpoint(args.score_with, flag='--score-with')[0]
    other = args.compare and load_checkpoint(args.compare, flag='--compare')[0]
    animating = args.animate and on_terminal()  # else exactly as without --animate
    models = [model] + [other] * bool(animating and other)
    start, samples, pictured, reader_left = how.pattern[0] if how.pattern else [], [], [], False
    with Workers(min(args.workers, args.num)) as workers:
        results = zip(*[sample_names(m, args.num, args.seed, how if m is model else md.Sampling(
            temperature=how.temperature, order=how.order), workers,
            bool(args.trace or args.svg or animating)) for m in models])
        for number, ((name, trace), *_) in enumerate(
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
            samples += [name] * bool(args.stats)
    if args.svg:
        write_atomic(args.svg, reverse_svg(pictured, model.tok), '--svg')
    if reader_left:
        raise BrokenPipeError  # main ends quietly
    for line in sample_report(samples, train_names, held_out, model.cfg.block_size) \
            if args.stats else ():
        say(line)
    if scorer:
        with Workers(args.workers) as workers:
            say(f'scored by {args.score_with}: ' + '; '.join(
                score_line(scorer, names, label, workers) for label, names in
                (('samples', samples), ('held-out real names', held_out))))


def write_text(args, model):
    """sample from a model of running text: --chars characters after --prompt, written block
    by block (a GPT's block: one character), each block printed as soon as it is decided."""
    for flag in ('num', 'pattern', 'stats', 'length', 'data', 'svg', 'compare', 'score_with'):
        if getattr(args, flag) not in (None, False):
            raise UserError(f'--{flag.replace("_", "-")}: means nothing for running text; '
                            '--chars and --prompt say what to write')
    unknown = sorted(set(args.prompt) - set(model.tok.chars))
    if unknown:
        raise UserError(f'--prompt: {"".join(unknown)!r} is not in the vocabulary of '
                        f'{args.checkpoint}')
    how, tok, size = sampling_from(args, model), model.tok, model.cfg.block_size
    context = args.context or (size - 1 if model.cfg.model == 'gpt' else 3 * size // 4)
    if context >= size:
        raise UserError(f'--context {context}: a window of {size} needs room to write in; give '
                        f'at most {size - 1}')
    animating = args.animate and on_terminal()
    out(args.prompt, end='')
    for number, (fresh, trace) in enumerate(md.write(
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


def training_split(model, state, data, checkpoint):
    """(what trained, what was held out, path) of the data a checkpoint was trained on: `data`
    if given, else the file its training section names, if that is still the same data."""
    state = state or {}
    settings = state.get('settings') if isinstance(state.get('settings'), dict) else {}
    val_size = settings.get('val_size')
    cfg = replace(model.cfg, val_size=val_size if fits(val_size, LIMITS['val_size']) else
                  md.Config.val_size)
    if data:
        return (*split_data(read_data(data, cfg), cfg), data)
    path = state.get('data')
    path = path if isinstance(path, str) and os.path.isfile(path) else DEFAULT_DATA
    with contextlib.suppress(UserError):
        train_names, held_out = split_data(read_data(path, cfg), cfg)
        if fingerprint(train_names) == state.get('data_fingerprint'):
            return train_names, held_out, path
    raise UserError(f'{checkpoint}: the data it was trained on is not at hand ({path} is not '
                    'it); pass --data FILE')


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
                  for m, s, (_, trace) in zip(models, starts, row)] for row in block], args.fps)
        yield from block
        left -= len(block)
        block = []


# --- eval, forward, bench --------------------------------------------------------------------

def run_eval(args):
    model, state = load_checkpoint(args.checkpoint)
    gpt = model.cfg.model == 'gpt'
    kind, title, how = (('gpt' if gpt else 'left-to-right',
                         f'NLL ({"GPT" if gpt else "left to right"}, exact)',
                         'exact, by the chain rule') if gpt or args.order == 'left-to-right' else
                        ('random orders', 'NELBO', f'one random order each, seed {args.seed}'))
    cfg, unit, seen = model.cfg, 'window' if model.cfg.text else 'name', args.context or 0
    if args.context is not None and not (cfg.text and seen < cfg.block_size
                                         and kind != 'left-to-right'):
        raise UserError(f'--context {seen}: scores what follows the start of a window of '
                        f'running text, fewer than {cfg.block_size} characters, in any order')
    if seen:
        how += f'; each window\'s last {cfg.block_size - seen} characters given its first {seen}'
    if args.data:  # a text file is scored whole, in windows
        sets = [(path, windows(read_text(path), cfg.block_size) if cfg.text else
                 read_names(path, cfg.longest())) for path in args.data]
    else:
        trained, held_out, path = training_split(model, state, None, args.checkpoint)
        if not held_out:
            raise UserError(f'{args.checkpoint}: nothing of its data was held out; pass --data')
        sets = [(f'{os.path.basename(path)} ' + ('held-out end' if cfg.text else
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
    with Workers(args.workers) as workers:
        for label, names in sets:
            progress = Progress(len(names), unit)
            estimates = nelbo_estimates(model, names, args.seed, workers, kind, progress, seen)
            progress.finish()
            mean, stderr, bits = summary(estimates, names, cfg, seen)
            out(f'{label}: {mean:.2f} {plus_minus} {stderr:.2f} nats/{unit}, {bits:.3f} '
                f'bits/char ({len(names)} {unit}s, {how})')
            everything, all_estimates = everything + names, all_estimates + estimates
    mean, _, bits = summary(all_estimates, everything, cfg, seen)
    out(f'{title} {mean:.2f} nats/{unit}  {bits:.3f} bits/char  ({len(everything)} {unit}s)')
    if cfg.text and not args.data:  # each window scored alone: the bigram sees across them
        out(f'an add-one bigram counted on the training text: '
            f'{bigram_bits(trained, held_out, seen):.3f} bits/char')


def summary(estimates, names, cfg, seen=0):
    """(mean nats a name, its standard error, bits a character): a name's end counts as one
    character; a window of text its characters after the first `seen`."""
    stderr = statistics.stdev(estimates) / math.sqrt(len(estimates)) if len(names) > 1 else 0.0
    return (statistics.fmean(estimates), stderr, sum(estimates) / math.log(2)
            / sum(len(n) + (not cfg.text) - seen for n in names))


def run_forward(args):
    name, longest = args.name.strip(), args.block_size - (not args.padding)
    if not name or len(name) > longest or any(unsafe(c, '\t') for c in name):
        raise UserError(f'give a name of 1 to {longest} characters, not {args.name!r}')
    tok = md.Tokenizer.from_names([name])
    model = md.Model(md.Config(block_size=args.block_size, padding=args.padding), tok, None)
    tokens = model.encode(name)
    positions = md.erasable(model, tokens)
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
        model = new_model(md.Config(), [n for n in read_names(args.data)
                                        if len(n) < md.Config.block_size])
        weights = 'freshly initialised weights (train first: trained ones cost differently)'
    cfg, tok, frozen = model.cfg, model.tok, model.frozen()
    names = windows(read_text(args.data), cfg.block_size) if cfg.text else read_names(args.data)
    names = [n for n in names if len(n) <= cfg.longest() and set(n) <= set(tok.chars)]
    if not names:
        raise UserError(f'{args.data}: has no name this model can hold; pass --data')
    adam, rng = md.Adam(md.flatten(model.params), cfg), random.Random(0)  # the same names each run
    picks = [rng.choice(names) for _ in range(args.repeats)]
    out(f'bench: {cfg.denoiser} with {len(adam.values):,} parameters, {weights}, batch size 1, '
        f'{sys.implementation.name} {sys.version.split()[0]}')
    typical = model.encode(sorted(picks, key=len)[len(picks) // 2])
    if cfg.model == 'gpt':  # what a GPT reads: the start token (MASK's row), then the letters
        masked = [tok.MASK] + (typical[:typical.index(tok.PAD)] if tok.PAD in typical else
                               typical[:-1])
        reads = f'{len(masked)} positions, the start token and the letters'
    else:
        erasable = md.erasable(model, typical)
        masked = [tok.MASK if i in erasable else t for i, t in enumerate(typical)]
        reads = f'{len(masked)} positions, {masked.count(tok.MASK)} masked'
    for label, fn in (('training step (forward + backward + Adam)',
                       lambda i: md.train_step(model, adam, [picks[i]], i)),
                      (f'forward pass, no graph, a {"window" if cfg.text else "median name"}: '
                       f'{reads}', lambda i: frozen.logits(masked, range(len(masked)))),
                      (f'written block of {cfg.block_size // 2} characters' if cfg.text else
                       'sampled name', lambda i: list(md.write(
                           frozen, [], cfg.block_size // 2, random.Random(i), md.Sampling(), 0))
                       if cfg.text else md.sample_tokens(frozen, random.Random(i), md.Sampling()))):
        times = []
        for i in range(args.repeats):
            began = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - began)
        out(f'{label}: {statistics.median(times) * 1000:.1f} ms median of {args.repeats}')
    nodes, edges = [], []  # of one name's training graph, as far as backward reaches
    for i, name in enumerate(picks):
        rng = random.Random(i)
        interior = topological_order(md.name_loss(model, (
            model.encode(name), md.noise_levels(rng, cfg.t_min, 1)[0], rng.random())))
        leaves = {child for node in interior for child in node._children if not child._children}
        nodes.append(len(interior) + len(leaves))
        edges.append(sum(len(node._children) for node in interior))
    out(f'graph per training step: {statistics.median(nodes):,.0f} nodes, '
        f'{statistics.median(edges):,.0f} edges (median)')


RUN = {None: run_lab, 'train': run_train, 'sample': run_sample, 'eval': run_eval,
       'forward': run_forward, 'bench': run_bench}


def main(argv=None):
    args = build_parser().parse_args(argv)
    without_cycle_collector()
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
    except Interrupted as e:  # from run_training, which saved the last finished step
        say(f'interrupted: {e.args[1]}')
        return 128 + e.args[0]
    except KeyboardInterrupt as e:  # Ctrl-C outside training, or a signal during --animate
        say('interrupted')
        return 128 + (e.args[0] if e.args else signal.SIGINT)
    except BrokenPipeError:  # e.g. `sample | head -3`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 1
