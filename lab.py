"""The lab around microdiffusion.py's algorithm: data files, processes, progress, checkpoints,
reports, pictures and the command line. `python microdiffusion.py [command]` hands over to
main() here; the algorithm never needs this module to train or sample."""

import argparse
import collections
import gc
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from xml.sax.saxutils import escape

import microdiffusion as md
from value import Value, topological_order

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'names.txt')
DEFAULT_CHECKPOINT = 'model.json'
MODEL_FIELDS = ('model', 'n_embd', 'n_head', 'n_layer', 'block_size', 'denoiser', 'mlp_hidden')
MAX_PARAMS = 2_000_000  # a bigger model needs gigabytes of Values, and days to train

# What every setting may be, on the command line and in a checkpoint alike: (int, low, high)
# inclusive, (float, low, high) strictly between, or the words allowed.
LIMITS = {'n_embd': (int, 1, 1024), 'n_head': (int, 1, 1024), 'n_layer': (int, 1, 64),
          'block_size': (int, 1, 1024), 'model': ('diffusion', 'gpt'),
          'denoiser': tuple(md.DENOISERS), 'mlp_hidden': (int, 1, 65536),
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
    if isinstance(rule[0], str):
        return value in rule
    kind, low, high = rule
    if kind is int:
        return type(value) is int and low <= value <= high
    return type(value) in (int, float) and math.isfinite(value) and low < value < high


class UserError(Exception):
    """Something the user can fix (a path, a file, a flag): reported in one line, no traceback."""


class Interrupted(Exception):
    """A signal stopped training: args are (signal number, the step saved)."""


def say(text):
    """A line on stderr, which may have gone away (a closed pipe): then nothing is said."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        stderr_gone()


def stderr_gone():
    """Point stderr at the null device, so that nothing, not even Python at exit, fails on it."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    except OSError:
        pass


# --- Data ------------------------------------------------------------------------------------

def read_names(path, longest=None):
    """The names in a UTF-8 file, one per line (\\n, \\r\\n or a lone \\r), stripped; blank lines
    are skipped and a byte-order mark is never part of a name. Every problem is a UserError."""
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
    for number, line in enumerate(re.split(rb'\r\n|\r|\n', raw), start=1):
        try:
            name = line.decode('utf-8').replace('\ufeff', '').strip()
        except UnicodeDecodeError:
            raise UserError(f'{path}, line {number}: is not UTF-8 text; save it as UTF-8') from None
        if longest is not None and len(name) > longest:
            shown = name if len(name) <= 30 else name[:27] + '...'
            raise UserError(f'{path}, line {number}: {shown!r} has {len(name)} characters, more '
                            f'than the {longest} a name can have; shorten or remove it')
        if name:
            names.append(name)
    if not names:
        raise UserError(f'{path}: has no names (it is empty or only blank lines)')
    return names


def split_names(names, val_size):
    """(train, validation), depending only on the set of names: up to val_size distinct names
    (at most a tenth) drawn with a fixed seed, every copy of them left out of training."""
    held_out = random.Random(0).sample(sorted(set(names)), min(val_size, len(set(names)) // 10))
    held = set(held_out)
    return [n for n in names if n not in held], held_out


def fingerprint(names):
    """A short hash of the training names, so --resume can refuse different data."""
    return hashlib.sha256('\n'.join(names).encode('utf-8')).hexdigest()[:16]


def longest(cfg):
    """The longest name a model can hold: a GPT needs one position for its start token."""
    return cfg.block_size - 1 if cfg.model == 'gpt' else cfg.block_size


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

# The signals that stop training cleanly: Ctrl-C, kill, a closed terminal (where it exists).
STOP_SIGNALS = [getattr(signal, name) for name in ('SIGINT', 'SIGTERM', 'SIGHUP')
                if hasattr(signal, name)]


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# PyPy pickles slowly, so a pool of two trained slower there than one process.
TRAIN_PROCESSES = 1 if sys.implementation.name == 'pypy' else available_cpus()


def under_debugger():
    """Whether a debugger traces this process (pdb, an IDE's, or on 3.12+ sys.monitoring's)."""
    monitoring = getattr(sys, 'monitoring', None)
    return sys.gettrace() is not None or (
        monitoring is not None and monitoring.get_tool(monitoring.DEBUGGER_ID) is not None)


def processes(requested):
    """As many processes as asked, but one under a debugger: a breakpoint in a worker process
    would fire where nobody is watching."""
    if requested > 1 and under_debugger():
        say('a debugger is attached: running in this one process')
        return 1
    return requested


class Workers:
    """Maps a function over jobs, in order, in n processes (n = 1: in this one, no pool). Every
    job carries its own inputs and random seed, so results never depend on n."""

    def __init__(self, n):
        self.n, self.pool = n, None

    def __enter__(self):
        if self.n > 1:
            self.pool = multiprocessing.Pool(self.n, _start_worker, (os.getpid(),))
        return self

    def __exit__(self, *exc):
        if self.pool:
            self.pool.terminate()
            self.pool.join()

    def map(self, fn, jobs, stop=lambda: 0):
        """fn(job) for each job, in order, with at most two jobs a process in flight, so memory
        stays flat however many there are; raises Interrupted while waiting if stop() says so."""
        if not self.pool:
            yield from map(fn, jobs)
            return
        pending = collections.deque()
        for job in jobs:
            pending.append(self.pool.apply_async(fn, (job,)))
            if len(pending) >= 2 * self.n:
                yield self.wait(pending.popleft(), stop)
        while pending:
            yield self.wait(pending.popleft(), stop)

    @staticmethod
    def wait(result, stop):
        while not result.ready():
            result.wait(0.1)
            if stop():
                raise Interrupted(stop())
        return result.get()


def _start_worker(parent):
    """A worker leaves signals to the main process, and ends within a second of its death,
    however it died."""
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
    for name, rows in model.params.items():
        for row, numbers in zip(replica.params[name], rows):
            for p, x in zip(row, numbers):
                p.data = x
    return replica, values


def _gradient_job(job):
    model, items = job
    model, values = _local(model)
    return [md.name_gradient(model, values, item) for item in items]


# How a name is scored: an estimate of the NELBO, or an exact -log p in one order.
ESTIMATES = {'random orders': md.nelbo, 'one pass': md.nelbo_one_pass,
             'left-to-right': lambda model, tokens, rng: md.left_to_right_nll(model, tokens),
             'gpt': lambda model, tokens, rng: md.gpt_loss(model, tokens)}


def _nelbo_job(job):
    model, items, kind = job
    return [ESTIMATES[kind](model, tokens, random.Random(seed)) for tokens, seed in items]


def _sample_job(job):
    model, how, seeds, want_trace = job
    results = []
    for seed in seeds:
        trace = [] if want_trace else None
        tokens = md.sample_tokens(model, random.Random(seed), how, trace)
        results.append((model.tok.decode(tokens), trace))
    return results


def gradients_from(workers, model, stop):
    """train_step's gradients(items): shares of at most 8 names, on the model's own Values
    in this process or on copies in the workers, stopping between names if stop() says so."""
    def gradients(items):
        source = model if workers.n == 1 else model.frozen()
        size = min(8, -(-len(items) // workers.n))
        jobs = [(source, items[i:i + size]) for i in range(0, len(items), size)]
        for share in workers.map(_gradient_job, jobs, stop):
            for result in share:
                if stop():
                    raise Interrupted(stop())
                yield result
    return gradients


def nelbo_estimates(model, names, seed, workers, kind='random orders', on_progress=None):
    """Each name's score in nats (see ESTIMATES), each from its own seeded random generator."""
    rng, frozen = random.Random(f'{seed}:nelbo'), model.frozen()
    items = [(model.tok.encode(name, model.cfg.block_size), rng.getrandbits(64)) for name in names]
    size = -(-len(items) // max(1, len(items) // 10))
    estimates = []
    jobs = [(frozen, items[i:i + size], kind) for i in range(0, len(items), size)]
    for share in workers.map(_nelbo_job, jobs):
        estimates += share
        if on_progress:
            on_progress(len(estimates))
    return estimates


def sample_names(model, n, seed, how, workers, want_trace=False):
    """n (name, trace) pairs, streamed as they are made: the same names as md.sample()."""
    rng, frozen = random.Random(f'{seed}:sample'), model.frozen()
    jobs = ((frozen, how, [rng.getrandbits(64) for _ in range(min(4, n - i))], want_trace)
            for i in range(0, n, 4))
    for share in workers.map(_sample_job, jobs):
        yield from share


# --- Training in the lab: the algorithm's step, with signals, validation, progress, saving ---

class Signals:
    """While active, Ctrl-C, SIGTERM and SIGHUP only note the signal; calling the object gives
    its number (0 if none came), so training can stop at a safe place."""

    def __enter__(self):
        self.received, self.previous = 0, {}
        for number in STOP_SIGNALS:
            self.previous[number] = signal.signal(number, self.note)
        return self

    def note(self, number, frame):
        self.received = self.received or number

    def __call__(self):
        return self.received

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def run_training(model, train_names, val_names, data_fingerprint, checkpoint, workers,
                 state=None, stop_after=None, stop=lambda: 0, data=None):
    """Train model.params in place up to model.cfg.steps (continuing from `state`), showing
    progress and saving the checkpoint at every validation and at the end.

    Once stop() names a signal (see Signals), the step under way is abandoned (Adam untouched),
    the last finished one saved, and Interrupted raised. A loss that is not finite raises
    UserError, the checkpoint left as it was. stop_after (tests) ends the run early, saved.
    """
    cfg = model.cfg
    adam = md.Adam(md.flatten(model.params), cfg)
    step, saved_at = 0, None  # saved_at: the step the checkpoint on disk holds
    if state:
        step = saved_at = state['step']
        adam.t, adam.m, adam.v = state['adam_t'], state['adam_m'], state['adam_v']
    batches, progress = md.Batches(train_names, cfg), Progress(cfg.steps, 'step', step)
    smooth, weight = state.get('smoothed', [0.0, 0.0]) if state else (0.0, 0.0)
    val = None
    # The run's curve: [step, loss, smoothed loss, validation or None, seconds], about 400 rows
    history = list(state.get('history', [])) if state else []
    began = time.perf_counter() - (history[-1][4] if history else 0.0)
    every = max(1, cfg.steps // 400)
    # The loss covers the noise levels from t_min up (see md.diffusion_loss); validation's
    # NELBO covers them all, so it sits above the loss without any over-fitting.
    loss_label = 'loss' if cfg.model == 'gpt' else f'loss(t>={cfg.t_min:g})'
    val_label = 'val NLL ' if cfg.model == 'gpt' else 'val NELBO ~'

    def save():
        training = {'step': step, 'settings': asdict(cfg), 'data_fingerprint': data_fingerprint,
                    'data': data, 'adam_t': adam.t, 'adam_m': adam.m, 'adam_v': adam.v,
                    'history': history, 'smoothed': [smooth, weight]}
        try:
            save_checkpoint(checkpoint, model, training)
        except OSError as e:
            kept = 'nothing was saved' if saved_at is None else f'it still holds step {saved_at}'
            raise UserError(f'{checkpoint}: could not save step {step} '
                            f'({e.strerror or e}); {kept}') from None

    gradients = gradients_from(workers, model, stop)
    try:
        while step < cfg.steps and step != stop_after and not stop():
            try:
                loss = md.train_step(model, adam, batches.at(step), step, gradients)
            except Interrupted:
                break
            except ArithmeticError as e:
                kept = 'is untouched' if saved_at is None else f'keeps step {saved_at}'
                raise UserError(f'training diverged at step {step + 1} ({e}); {checkpoint} '
                                f'{kept}; try a smaller --lr') from None
            step += 1
            smooth, weight = 0.98 * smooth + 0.02 * loss, 0.98 * weight + 0.02
            detail = f'{loss_label} {loss:.3f}  smooth {smooth / weight:.3f}'
            validated = val_names and (step % cfg.val_every == 0 or step == cfg.steps)
            if validated:
                val = statistics.fmean(validation(model, val_names[:cfg.val_names], workers))
            if validated or step % every == 0 or step == cfg.steps:
                history.append([step, loss, smooth / weight, val if validated else None,
                                round(time.perf_counter() - began, 3)])
            if validated:
                save()
                saved_at = step
            if val is not None:
                detail += f'  {val_label}{val:.2f}'
            progress.update(step, detail, force=saved_at == step)
        if saved_at != step:
            save()
    finally:
        progress.finish()
    if stop() and step < cfg.steps:
        raise Interrupted(stop(), step)
    return history


def validation(model, names, workers):
    """One-pass NELBO estimates of held-out names, always with the same seed, so successive
    validations differ only because the model changed."""
    try:
        kind = 'gpt' if model.cfg.model == 'gpt' else 'one pass'
        return nelbo_estimates(model, names, 0, workers, kind)
    except ArithmeticError as e:
        raise UserError(f'validation overflowed ({e}); try a smaller --lr') from None


class Progress:
    """One status line on stderr: how far, the caller's figures, the speed and the time left.
    Rewritten in place on a terminal; on a pipe, a line at every tenth."""

    def __init__(self, total, unit, start=0):
        self.total, self.unit, self.start = total, unit, start
        self.live, self.shown = sys.stderr.isatty(), False
        self.began = time.perf_counter()

    def update(self, done, detail='', force=False):
        speed = (done - self.start) / max(time.perf_counter() - self.began, 1e-9)
        left = int((self.total - done) / max(speed, 1e-9))
        line = (f'{self.unit} {done}/{self.total}  {detail}{"  " if detail else ""}{speed:.1f} '
                f'{self.unit}s/s  {f"{left // 60}m{left % 60:02d}s" if left >= 60 else f"{left}s"}'
                ' left')
        if self.live:
            self.write('\r' + line + '\033[K')
            self.shown = True
        elif force or done == self.total or done % max(1, self.total // 10) == 0:
            self.write(line + '\n')

    def finish(self):
        if self.shown:
            self.write('\n')
            self.shown = False

    @staticmethod
    def write(text):
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr is gone: the work goes on without it
            stderr_gone()


# --- Checkpoints -----------------------------------------------------------------------------

def save_checkpoint(path, model, training=None):
    """One JSON file: the vocabulary, the model's shape, the weights [out][in], and what
    --resume needs. Floats are written with repr, so they read back exactly."""
    doc = {'format': 'microdiffusion checkpoint', 'version': 1, 'chars': model.tok.chars,
           'config': {f: getattr(model.cfg, f) for f in MODEL_FIELDS},
           'params': md.as_floats(model.params)}
    if training:
        doc['training'] = training
    write_atomic(path, json.dumps(doc, allow_nan=False))


def write_atomic(path, text):
    """Write a temporary file beside the target, then rename it over the target: a crash at
    any moment leaves the old file or the new one, never half of one. A symlink is followed
    (its target replaced, the link kept), and an existing file keeps its mode."""
    target = os.path.realpath(path)
    mode = os.stat(target).st_mode & 0o7777 if os.path.exists(target) else 0o644
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target),
                               prefix='.' + os.path.basename(target) + '.', suffix='.tmp')
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


def check_writable(path, flag='--checkpoint', noun='checkpoint'):
    """Fail now, not after an hour of training, unless path is a file name in a folder we may
    write, and what is there already is a regular file that is not read-only."""
    if not path or path.endswith(('/', os.sep)):
        raise UserError(f'{flag} {path!r}: give a file name for the {noun}')
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise UserError(f'{path}: is a folder; give a file name for the {noun}')
    if os.path.exists(target):
        mode = os.stat(target).st_mode
        if not (mode & 0o170000) == 0o100000:
            raise UserError(f'{path}: is not a regular file; give a file name for the {noun}')
        if not mode & 0o222:
            raise UserError(f'{path}: is read-only; make it writable or choose another {flag}')
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix='.microdiffusion.')
    except OSError as e:
        raise UserError(f'{path}: cannot write a {noun} there ({e.strerror}); '
                        f'choose another {flag}') from None
    os.close(fd)
    os.unlink(tmp)


def load_checkpoint(path):
    """(model, training state or None), every part checked before anything is used."""
    try:
        if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
            raise UserError(f'{path}: is not a regular file, so not a checkpoint')
        with open(path, encoding='utf-8') as f:
            doc = json.loads(f.read(), parse_constant=not_a_number(path))
    except FileNotFoundError:
        raise UserError(f'{path}: no such checkpoint; train one first '
                        '(python microdiffusion.py train) or pass --checkpoint') from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'{path}: cannot be read as a checkpoint ({e})') from None
    except (ValueError, RecursionError) as e:  # bad JSON, a 5,000-digit number, deep nesting
        reason = 'nested too deeply' if isinstance(e, RecursionError) else str(e)[:80]
        raise UserError(f'{path}: is not a microdiffusion checkpoint (not JSON: {reason})') \
            from None

    def bad(what):
        return UserError(f'{path}: not a valid microdiffusion checkpoint ({what})')

    if not (isinstance(doc, dict) and doc.get('format', 'microdiffusion checkpoint')
            == 'microdiffusion checkpoint'):
        raise bad('not a JSON object with "chars", "config" and "params"')
    chars = doc.get('chars')
    chars = list(chars) if isinstance(chars, str) else chars
    if (not isinstance(chars, list) or not chars or len(set(chars)) != len(chars)
            or not all(isinstance(c, str) and len(c) == 1 for c in chars)):
        raise bad('"chars" must list distinct single characters')
    shape = doc.get('config')
    if not isinstance(shape, dict):
        raise bad('no "config"')
    cfg = md.Config()
    for name in MODEL_FIELDS:
        setattr(cfg, name, shape.get(name, getattr(cfg, name)))
        if not fits(getattr(cfg, name), LIMITS[name]):
            raise bad(f'config {name} = {shape[name]!r}')
    if cfg.n_embd % cfg.n_head:
        raise bad(f'config: n_embd {cfg.n_embd} is not a multiple of n_head {cfg.n_head}')
    tok = md.Tokenizer(chars)
    shapes = md.DENOISERS[cfg.denoiser][0](cfg, tok.vocab_size)
    if sum(rows * columns for rows, columns in shapes.values()) > MAX_PARAMS:
        raise bad(f'config describes more than {MAX_PARAMS:,} parameters')
    params = doc.get('params')
    if not isinstance(params, dict) or set(params) != set(shapes):
        raise bad(f'"params" must have exactly {", ".join(sorted(shapes))}')
    for name, (n_rows, n_columns) in shapes.items():
        rows = params[name]
        if not (isinstance(rows, list) and len(rows) == n_rows and all(
                isinstance(row, list) and len(row) == n_columns and numbers(row, 1e6)
                for row in rows)):
            raise bad(f'{name} should be {n_rows} x {n_columns} finite numbers of at most 1e6')
    model = md.Model(cfg, tok, {name: [[Value(float(x)) for x in row] for row in rows]
                                for name, rows in params.items()})
    training = doc.get('training')
    if training is not None:
        check_training_state(training, len(md.flatten(model.params)), bad)
        if any(training['settings'][name] != getattr(cfg, name) for name in MODEL_FIELDS):
            raise bad('"training" settings disagree with "config"')
    return model, training


def not_a_number(path):
    def reject(constant):  # NaN or Infinity
        raise UserError(f'{path}: holds {constant}, not a finite number; it is damaged')
    return reject


def numbers(xs, most):
    """Whether xs are all finite numbers of at most `most` in size."""
    return all(type(x) in (int, float) and -most <= x <= most for x in xs)


def check_training_state(training, n_params, bad):
    """Raise bad(...) unless `training` is a state --resume can continue from, every setting
    within LIMITS. Settings an older version recorded that no longer shape training (the
    sampling temperatures) are dropped."""
    settings = training.get('settings') if isinstance(training, dict) else None
    if not isinstance(settings, dict):
        raise bad('"training" must hold the run\'s "settings"')
    settings.setdefault('model', 'diffusion')  # written before GPT existed
    missing = sorted(set(LIMITS) - set(settings))
    if missing:
        raise bad(f'"training" settings lack {", ".join(missing)}')
    training['settings'] = settings = {name: settings[name] for name in LIMITS}
    for name, value in settings.items():
        if not fits(value, LIMITS[name]):
            raise bad(f'"training" setting {name} = {value!r} is out of range')
    if not (fits(training.get('step'), (int, 0, settings['steps']))
            and fits(training.get('adam_t'), (int, 0, 10**9))
            and isinstance(training.get('data_fingerprint'), str)):
        raise bad('"training" step, adam_t or data_fingerprint is missing or out of range')
    for key in ('adam_m', 'adam_v'):
        if not (isinstance(training.get(key), list) and len(training[key]) == n_params
                and numbers(training[key], 1e12)):
            raise bad(f'"training" {key} must hold {n_params} finite numbers')
    smoothed = training.setdefault('smoothed', [0.0, 0.0])  # older checkpoints kept neither
    if not (isinstance(smoothed, list) and len(smoothed) == 2 and numbers(smoothed, 1e12)):
        raise bad('"training" smoothed must be [average, weight]')
    history = training.setdefault('history', [])
    if not (isinstance(history, list) and len(history) <= 10**6 and all(
            isinstance(row, list) and len(row) == 5 and fits(row[0], (int, 1, 10**9))
            and numbers([x for x in row[1:] if x is not None], 1e12) for row in history)):
        raise bad('"training" history must be rows of [step, loss, smoothed, validation, seconds]')


# --- Reports ---------------------------------------------------------------------------------

def sample_report(samples, train_names, held_out, block_size):
    """Lines describing sampled names against the data: new, unique, length."""
    train, held, data = set(train_names), set(held_out), train_names + held_out
    new = [s for s in samples if s not in train]
    mine, theirs = length_histogram(samples, block_size), length_histogram(data, block_size)
    tv = sum(abs(a - b) for a, b in zip(mine, theirs)) / 2
    lines = [f'{len(samples)} names: {len(new) / len(samples):.1%} new (not in the training data; '
             f'{sum(1 for s in new if s in held)} of them are held-out real names), '
             f'{len(set(samples)) / len(samples):.1%} unique',
             f'mean length {statistics.fmean(map(len, samples)):.2f} '
             f'(data {statistics.fmean(map(len, data)):.2f}), length histogram total variation '
             f'{tv:.3f}',
             'length    data  samples   (each # is 2% of names)']
    for length, (a, b) in enumerate(zip(theirs, mine)):
        if a or b:
            lines.append(f'{length:6d}  {a:6.1%}  {b:6.1%}   {"#" * round(a * 50):<20s}|'
                         f'{"#" * round(b * 50)}')
    return lines


def length_histogram(names, block_size):
    counts = collections.Counter(map(len, names))
    return [counts[length] / len(names) for length in range(block_size + 1)]


def nelbo_summary(estimates, names):
    """(mean nats/name, its standard error, bits per character) for a list of estimates.
    Characters are counted as len(name) + 1: the +1 is the end of the name."""
    mean = statistics.fmean(estimates)
    stderr = statistics.stdev(estimates) / math.sqrt(len(estimates)) if len(estimates) > 1 else 0.0
    return mean, stderr, sum(estimates) / math.log(2) / sum(len(n) + 1 for n in names)


def check_vocabulary(names, tok, label):
    for name in names:
        unknown = sorted(set(name) - set(tok.chars))
        if unknown:
            raise UserError(f'{label}: {name!r} has {"".join(unknown)!r}, which the model\'s '
                            'vocabulary lacks, so its probability is 0')


def score_line(model, names, label, workers):
    """The mean score of names under a model that did not make them: exact -log p for a GPT,
    the NELBO for diffusion; names it cannot hold are left out and counted."""
    fit = [n for n in names if len(n) <= longest(model.cfg) and set(n) <= set(model.tok.chars)]
    if not fit:
        return f'{label}: none it can score'
    kind = 'gpt' if model.cfg.model == 'gpt' else 'random orders'
    mean = statistics.fmean(nelbo_estimates(model, fit, 0, workers, kind))
    left_out = f' ({len(names) - len(fit)} it cannot hold left out)' * (len(fit) < len(names))
    return f'{label} {mean:.2f} nats/name{left_out}'


# --- Pictures: the training curve and the reverse process -----------------------------------

def curve_chart(history, width=60, height=10):
    """A text chart of a run's history: the smoothed loss (·) and validation (o) by step."""
    points = [(row[0], row[2], '·') for row in history]
    points += [(row[0], row[3], 'o') for row in history if row[3] is not None]
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    last, span = history[-1][0], (high - low) or 1.0
    grid = [[' '] * width for _ in range(height)]
    for step, value, mark in points:
        x, y = round((step / last) * (width - 1)), round((high - value) / span * (height - 1))
        if grid[y][x] != 'o':
            grid[y][x] = mark
    lines = [f'{high - span * r / (height - 1):7.2f} |' + ''.join(row)
             for r, row in enumerate(grid)]
    return lines + ['        +' + '-' * width, f'         step 0{str(last):>{width - 6}}',
                    '         · smoothed loss   o validation (nats per name)']


def curve_svg(history):
    """The same chart as a self-contained SVG picture."""
    w, h, pad = 600, 300, 50
    values = [row[2] for row in history] + [row[3] for row in history if row[3] is not None]
    low, high, last = min(values), max(values), history[-1][0]
    span = (high - low) or 1.0

    def xy(step, value):
        return pad + step / last * (w - 2 * pad), h - pad - (value - low) / span * (h - 2 * pad)
    loss = ' '.join('%.1f,%.1f' % xy(row[0], row[2]) for row in history)
    dots = ''.join('<circle cx="%.1f" cy="%.1f" r="4" fill="#d62728"/>' % xy(row[0], row[3])
                   for row in history if row[3] is not None)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'font-family="sans-serif" font-size="12"><rect width="{w}" height="{h}" fill="white"/>'
            f'<polyline points="{loss}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>{dots}'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>'
            f'<text x="{pad}" y="{h - pad + 16}">0</text>'
            f'<text x="{w - pad}" y="{h - pad + 16}" text-anchor="end">step {last}</text>'
            f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{high:.1f}</text>'
            f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">{low:.1f}</text>'
            f'<text x="{w / 2}" y="{pad - 20}" text-anchor="middle">smoothed loss (blue) and '
            f'validation (red), nats per name</text></svg>\n')


def frames(start, trace, tok):
    """A name's states, from its start through every step of its trace, each as the name
    reads: whatever follows its first PAD is not part of it, so it is drawn as PAD."""
    states = [list(start)] + [tokens for _, _, _, tokens in trace]
    ends = [state.index(tok.PAD) if tok.PAD in state else len(state) for state in states]
    return [state[:end] + [tok.PAD] * (len(state) - end) for state, end in zip(states, ends)]


def reverse_svg(rows, tok, seconds_per_frame=0.25):
    """An animated SVG of the reverse process: each row a name's frames, shown in turn by
    SVG's own animation (no script), the last one held, then again from the start."""
    mask_mark, pad_mark = marks(tok)
    count = max(len(row) for row in rows) + 6  # the finished names stay a while
    width, height = 40 + 14 * len(rows[0][0]), 30 + 24 * len(rows)
    groups = []
    for k in range(count):
        texts = []
        for r, row in enumerate(rows):
            spans = ''.join(
                f'<tspan fill="#bbb">{escape(mask_mark)}</tspan>' if t == tok.MASK else
                f'<tspan fill="#ddd">{escape(pad_mark)}</tspan>' if t == tok.PAD else
                escape(tok.chars[t]) for t in row[min(k, len(row) - 1)])
            texts.append(f'<text x="20" y="{30 + 24 * r}">{spans}</text>')
        if k == 0:  # visible from the start until the second frame
            values, keys = 'visible;hidden', f'0;{1 / count:.4f}'
        elif k == count - 1:  # visible from its turn to the end of the loop
            values, keys = 'hidden;visible', f'0;{k / count:.4f}'
        else:
            values, keys = 'hidden;visible;hidden', f'0;{k / count:.4f};{(k + 1) / count:.4f}'
        groups.append(f'<g visibility="hidden"><animate attributeName="visibility" '
                      f'calcMode="discrete" values="{values}" keyTimes="{keys}" '
                      f'dur="{count * seconds_per_frame:.2f}s" repeatCount="indefinite"/>'
                      + ''.join(texts) + '</g>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="20" xml:space="preserve">'
            f'<rect width="{width}" height="{height}" fill="white"/>{"".join(groups)}</svg>\n')


def animate(block, fps):
    """Draw a block of rows in place on stderr, frame by frame: each row holds one list of
    painted frames per model, side by side; a finished row keeps its last frame."""
    out = sys.stderr
    out.write('\033[?25l')  # hide the cursor while drawing
    try:
        for k in range(max(len(frames) for row in block for frames in row)):
            if k:
                out.write(f'\033[{len(block)}A')  # back to the block's first line
            for row in block:
                out.write('\r\033[K' + '    '.join(f[min(k, len(f) - 1)] for f in row) + '\n')
            out.flush()
            time.sleep(1 / fps)
    finally:
        out.write('\033[0m\033[?25h')  # the terminal as it was
        out.flush()


def screenful():
    """How many names fit on the terminal at once, with room for a line or two."""
    return max(1, shutil.get_terminal_size((80, 24)).lines - 2)


# --- The command line ------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is reported in one line, with where to find help."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def setting(rule):
    """An argparse type that reads a number and holds it to a rule of LIMITS."""
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


def add_settings(parser, names, limits, defaults):
    """One flag per setting, checked by its limits; its default named in the help."""
    for name in names:
        rule, flag = limits[name], '--' + name.replace('_', '-')
        kind = dict(choices=rule) if isinstance(rule[0], str) else dict(type=setting(rule))
        default = 'the longest name + 1' if name == 'block_size' else getattr(defaults, name)
        parser.add_argument(flag, help=f'({default})', **kind)


TRAIN_SETTINGS = ('model', 'steps', 'batch_size', 'lr', 'seed', 'denoiser', 'n_embd', 'n_head',
                  'n_layer', 'block_size', 'mlp_hidden')
SAMPLE_SETTINGS = ('steps', 'temp_start', 'temp_end', 'temperature', 'remask', 'order',
                   'length')
# What a left-to-right sampler (GPT's, or --order left-to-right) has no use for: it draws every
# position, the end too, in order at the one --temperature, not by confidence.
NOT_LEFT_TO_RIGHT = ('temp_start', 'temp_end', 'remask', 'length')


def build_parser():
    parser = Parser(prog='microdiffusion.py', description='Masked text diffusion on names, in '
                    'pure Python. With no command: train on names.txt, save model.json, print '
                    '20 names.')
    commands = parser.add_subparsers(dest='command', metavar='command')
    workers = dict(type=setting((int, 1, 1024)), default=available_cpus(),
                   help='processes (default: every CPU; results do not depend on it)')
    checkpoint = dict(default=DEFAULT_CHECKPOINT, help='the model file (model.json)')

    train = commands.add_parser('train', help='train a model and save a checkpoint')
    train.add_argument('--data', default=DEFAULT_DATA, help='names, one per line (names.txt); '
                       'the block size follows its longest, unless --block-size is given')
    add_settings(train, TRAIN_SETTINGS, LIMITS, md.Config)
    train.add_argument('--checkpoint', **checkpoint)
    train.add_argument('--curve', metavar='FILE', help='also write the training curve (the '
                       'whole run\'s, after a --resume too) as an SVG picture')
    train.add_argument('--resume', action='store_true',
                       help='continue the run saved in --checkpoint, exactly where it stopped')
    train.add_argument('--workers', **dict(workers, default=TRAIN_PROCESSES, help=(
        'processes (default: every CPU, but one under PyPy, where that is faster; results '
        'do not depend on it)')))

    sample = commands.add_parser('sample', help='print new names from a checkpoint',
                                 description='A GPT checkpoint, or --order left-to-right, '
                                 'draws one position at a time at --temperature, and refuses '
                                 '--temp-start, --temp-end, --remask and --length.')
    sample.add_argument('--checkpoint', **checkpoint)
    sample.add_argument('--num', type=setting((int, 1, 10**15)), default=20,
                        help='how many names (20)')
    sample.add_argument('--seed', type=int, default=0)
    add_settings(sample, SAMPLE_SETTINGS, SAMPLING_LIMITS, md.Sampling)
    sample.add_argument('--pattern', help="fixed letters, '_' to fill, a final '*': m_r__, ka*")
    sample.add_argument('--trace', action='store_true', help='show each reverse step (stderr)')
    sample.add_argument('--stats', action='store_true',
                        help='new, unique and length figures against --data (stderr)')
    sample.add_argument('--data', default=DEFAULT_DATA, help='the training data, for --stats')
    sample.add_argument('--animate', action='store_true', help='on a terminal, show the names '
                        'developing in place on stderr (plain marks where NO_COLOR is set)')
    sample.add_argument('--fps', type=setting((float, 0, 10**4)), default=12.0,
                        help='frames a second for --animate (12)')
    sample.add_argument('--compare', metavar='CHECKPOINT',
                        help='with --animate: this model beside the first, the same seeds')
    sample.add_argument('--svg', metavar='FILE', help='write the reverse process of the first '
                        '8 names as an animated SVG picture')
    sample.add_argument('--score-with', metavar='CHECKPOINT', help='with --stats: the mean '
                        '-log p (or NELBO) of the samples and of held-out names under this model')
    sample.add_argument('--workers', **workers)

    evaluate = commands.add_parser('eval', help='negative ELBO of names under a checkpoint')
    evaluate.add_argument('--checkpoint', **checkpoint)
    evaluate.add_argument('--data', action='append', help='a file of names (repeatable); '
                          'default: the validation split of names.txt')
    evaluate.add_argument('--seed', type=int, default=0, help='seed of the random orders')
    evaluate.add_argument('--order', choices=('any', 'left-to-right'), default='any',
                          help='any: the NELBO over random orders; left-to-right: the exact '
                               '-log p of unmasking in that one order (a GPT has only that)')
    evaluate.add_argument('--workers', **workers)

    forward = commands.add_parser('forward', help='show the forward (masking) process on a name')
    forward.add_argument('name')
    forward.add_argument('--seed', type=int, default=0)
    forward.add_argument('--block-size', type=setting(LIMITS['block_size']),
                         default=md.Config.block_size, help=f'positions ({md.Config.block_size})')

    bench = commands.add_parser('bench', help='time training steps, forward passes, samples')
    bench.add_argument('--checkpoint', **dict(checkpoint, help='time these weights if the '
                                                               'file exists (model.json)'))
    bench.add_argument('--data', default=DEFAULT_DATA, help='names to time (names.txt)')
    bench.add_argument('--repeats', type=setting((int, 3, 10**6)), default=30,
                       help='timings per figure (30)')
    return parser


# --- train -----------------------------------------------------------------------------------

def run_lab(args):
    """python microdiffusion.py: the whole lab with the defaults."""
    cfg = md.Config()
    check_writable(DEFAULT_CHECKPOINT)
    names = read_names(DEFAULT_DATA, cfg.block_size)
    model = md.Model.new(cfg, md.Tokenizer.from_names(names))
    fit(model, names, None, DEFAULT_CHECKPOINT, TRAIN_PROCESSES, DEFAULT_DATA)
    say(f'saved {DEFAULT_CHECKPOINT}; 20 new names:')
    with Workers(processes(min(available_cpus(), 4))) as workers:
        for name, _ in sample_names(model, 20, 0, md.Sampling(), workers):
            print(name, flush=True)
    return 0


def run_train(args):
    model, state, names = resumed(args) if args.resume else new_model(args)
    fit(model, names, state, args.checkpoint, args.workers, args.data, args.curve)
    say(f'saved {args.checkpoint}')
    return 0


def new_model(args):
    """(a fresh model, no state, the names) for train's flags, every one checked first."""
    cfg = md.Config(**{name: getattr(args, name) for name in TRAIN_SETTINGS
                       if getattr(args, name) is not None})
    if cfg.model == 'gpt' and cfg.denoiser != 'transformer':
        raise UserError('--denoiser mlp: a GPT is the transformer, reading left to right')
    if cfg.n_embd % cfg.n_head:
        raise UserError(f'--n-embd {cfg.n_embd} must be a multiple of --n-head {cfg.n_head}: '
                        'each head takes n_embd / n_head of the numbers')
    check_writable(args.checkpoint)
    if args.curve:
        check_writable(args.curve, '--curve', 'picture')
    if args.block_size is None:  # the longest name and one PAD (or a GPT's start token)
        names = read_names(args.data)
        cfg.block_size = max(map(len, names)) + 1
        if not fits(cfg.block_size, LIMITS['block_size']):
            raise UserError(f'{args.data}: its longest line has {cfg.block_size - 1} characters; '
                            f'at most {LIMITS["block_size"][2] - 1} fit')
    else:
        names = read_names(args.data, longest(cfg))
    shapes = md.DENOISERS[cfg.denoiser][0](cfg, len(set(''.join(names))) + 2)
    if sum(rows * columns for rows, columns in shapes.values()) > MAX_PARAMS:
        raise UserError(f'that model would have more than {MAX_PARAMS:,} parameters; choose a '
                        'smaller --n-embd, --n-layer or --mlp-hidden')
    return md.Model.new(cfg, md.Tokenizer.from_names(names)), None, names


def resumed(args):
    """(the checkpoint's model, its training state, the names), the run's settings restored
    and every flag checked against them."""
    model, state = load_checkpoint(args.checkpoint)
    if state is None:
        raise UserError(f'{args.checkpoint}: has no training state to resume from (only a '
                        'checkpoint written by train holds one)')
    names = read_names(args.data, longest(model.cfg))
    train_names, _ = split_names(names, state['settings']['val_size'])
    if md.Tokenizer.from_names(names).chars != model.tok.chars:
        raise UserError(f'{args.data}: its characters differ from the checkpoint\'s vocabulary; '
                        'resume with the data it was trained on')
    if fingerprint(train_names) != state['data_fingerprint']:
        raise UserError(f'{args.data}: is not the data {args.checkpoint} was trained on; '
                        'resume with the same file')
    cfg = model.cfg = md.Config(**state['settings'])  # every setting of the run: it goes on
    for name in [n for n in TRAIN_SETTINGS if n != 'steps']:  # --steps may extend the run
        given = getattr(args, name)
        if given is not None and given != getattr(cfg, name):
            raise UserError(f'--{name.replace("_", "-")}: a resumed run keeps its checkpoint\'s '
                            f'{getattr(cfg, name)}; start a new run to change it')
    if args.steps is not None and args.steps < state['step']:
        raise UserError(f'--steps {args.steps}: the checkpoint is already at step {state["step"]}')
    cfg.steps = args.steps or cfg.steps
    if state['step'] >= cfg.steps:
        raise UserError(f'{args.checkpoint}: already trained for {cfg.steps} steps; pass '
                        '--steps with a larger total to continue')
    check_writable(args.checkpoint)
    if args.curve:
        check_writable(args.curve, '--curve', 'picture')
    return model, state, names


def fit(model, names, state, checkpoint, n_workers, data, curve=None):
    """Train model (from state, if resuming) on names, saving to checkpoint, with a chart of
    the run on stderr at the end (and an SVG of it in curve, if given)."""
    cfg = model.cfg
    train_names, held_out = split_names(names, cfg.val_size)
    with Signals() as stop, Workers(processes(min(n_workers, cfg.batch_size))) as workers:
        if state:
            say(f'resuming {checkpoint} at step {state["step"]} of {cfg.steps}')
        else:
            shape = (f'{cfg.n_layer} layers of {cfg.n_embd}, {cfg.n_head} heads' if
                     cfg.denoiser == 'transformer' else f'{cfg.mlp_hidden} hidden units')
            say(f'training a {cfg.model} {cfg.denoiser} ({shape}, {cfg.block_size} positions; '
                f'{len(md.flatten(model.params)):,} parameters) on {len(train_names):,} names '
                f'({len(held_out):,} held out) for {cfg.steps} steps of {cfg.batch_size}')
        history = run_training(model, train_names, held_out, fingerprint(train_names),
                               checkpoint, workers, state, stop=stop, data=os.path.abspath(data))
    if history:
        for line in curve_chart(history):
            say(line)
        if curve:
            write_atomic(curve, curve_svg(history))
            say(f'saved the training curve in {curve}')


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
    if args.pattern is not None:
        try:
            how.template, how.candidates = md.parse_pattern(args.pattern, model.tok,
                                                            longest(model.cfg))
        except ValueError as e:
            raise UserError(str(e)) from None
        how.template += [model.tok.PAD] * (model.cfg.block_size - len(how.template))
        how.candidates += [[model.tok.PAD]] * (model.cfg.block_size - len(how.candidates))
        blank = args.pattern.find('_')
        if gpt and 0 <= blank < len(args.pattern.rstrip('*_')):
            raise UserError(f'pattern {args.pattern!r}: a GPT reads left to right, so it can only '
                            'continue a fixed beginning (ka*, ka__); filling a blank before a '
                            'fixed letter takes diffusion')
    return how


def run_sample(args):
    model, _ = load_checkpoint(args.checkpoint)
    how = sampling_from(args, model)
    if args.stats:  # read the data first: a bad file should fail before the sampling
        train_names, held_out = split_names(read_names(args.data, longest(model.cfg)),
                                            md.Config.val_size)
        scorer = load_checkpoint(args.score_with)[0] if args.score_with else None
    if args.compare and not args.animate:
        raise UserError('--compare draws a second model beside the first: use it with --animate')
    if args.svg:
        check_writable(args.svg, '--svg', 'picture')
    animating = args.animate and sys.stderr.isatty()  # on a pipe, exactly as without it
    models = [model] + ([load_checkpoint(args.compare)[0]] if args.compare and animating else [])
    start = how.template or [model.tok.MASK] * model.cfg.block_size
    samples, pictured = [], []
    with Workers(processes(min(args.workers, args.num))) as workers:
        want = bool(args.trace or args.svg or animating)
        streams = [sample_names(m, args.num, args.seed, how if m is model else md.Sampling(
            temperature=how.temperature, order=how.order), workers, want) for m in models]
        results = zip(*streams)
        if animating:
            results = animated(results, models, start, args)
        for number, results in enumerate(results, start=1):
            name, trace = results[0]
            if args.trace:
                show_trace(number, trace, model.tok)
            if args.svg and len(pictured) < 8:
                pictured.append(frames(start, trace, model.tok))
            print(name, flush=True)
            if args.stats:
                samples.append(name)
    if args.svg:
        write_atomic(args.svg, reverse_svg(pictured, model.tok))
    if args.stats:
        for line in sample_report(samples, train_names, held_out, model.cfg.block_size):
            say(line)
        if scorer:
            with Workers(processes(args.workers)) as workers:
                say(f'scored by {args.score_with}: ' + '; '.join(
                    score_line(scorer, names, label, workers) for label, names in
                    (('samples', samples), ('held-out real names', held_out))))
    return 0


def show_trace(number, trace, tok):
    say(f'name {number}: reverse process ("{{}}" is MASK, "{{}}" is PAD)'.format(*marks(tok)))
    for i, t, T, tokens in trace:
        say(f'  step {i:3d}  t={t:.3f}  T={T:.3f}  {show(tokens, tok)}')


def animated(results, models, start, args):
    """The same results, each block of a screenful drawn developing in place before it is
    passed on; models side by side (--compare), each starting from its own blank."""
    colour = not os.environ.get('NO_COLOR') and os.environ.get('TERM') != 'dumb'
    starts = [start] + [[m.tok.MASK] * m.cfg.block_size for m in models[1:]]
    block, left = [], args.num
    for result in results:
        block.append(result)
        if len(block) < min(left, screenful()):
            continue
        animate([[[show(f, m.tok, colour) for f in frames(s, trace, m.tok)]
                  for m, s, (_, trace) in zip(models, starts, row)] for row in block], args.fps)
        yield from block
        left -= len(block)
        block = []


# --- eval, forward, bench --------------------------------------------------------------------

def run_eval(args):
    model, state = load_checkpoint(args.checkpoint)
    if model.cfg.model == 'gpt' or args.order == 'left-to-right':
        gpt = model.cfg.model == 'gpt'
        kind, what = ('gpt', 'GPT') if gpt else ('left-to-right', 'left to right')
        title, how = f'NLL ({what}, exact)', 'exact, by the chain rule'
    else:
        kind, title, how = 'random orders', 'NELBO', f'one random order each, seed {args.seed}'
    if args.data:
        sets = [(path, read_names(path, longest(model.cfg))) for path in args.data]
    else:
        data = state.get('data') if state else None  # the file it was trained on
        data = data if isinstance(data, str) and os.path.isfile(data) else DEFAULT_DATA
        names = read_names(data, longest(model.cfg))
        train_names, held_out = split_names(names, state['settings']['val_size'] if state
                                            else md.Config.val_size)
        if state is None or fingerprint(train_names) != state['data_fingerprint']:
            raise UserError(f'{args.checkpoint}: its training data is not at hand ({data} is '
                            'other data), so its validation split is unknown; pass --data FILE')
        sets = [(f'{os.path.basename(data)} validation split', held_out)]
    everything, all_estimates = [], []
    with Workers(processes(args.workers)) as workers:
        for label, names in sets:
            check_vocabulary(names, model.tok, label)
            progress = Progress(len(names), 'name')
            estimates = nelbo_estimates(model, names, args.seed, workers, kind, progress.update)
            progress.finish()
            mean, stderr, bits = nelbo_summary(estimates, names)
            print(f'{label}: {mean:.2f} ± {stderr:.2f} nats/name, {bits:.3f} bits/char '
                  f'({len(names)} names, {how})')
            everything += names
            all_estimates += estimates
    mean, _, bits = nelbo_summary(all_estimates, everything)
    print(f'{title} {mean:.2f} nats/name  {bits:.3f} bits/char  ({len(everything)} names)')
    return 0


def run_forward(args):
    name, block_size = args.name.strip(), args.block_size
    if not name or len(name) > block_size:
        raise UserError(f'give a name of 1 to {block_size} characters, not {args.name!r}')
    tok = md.Tokenizer.from_names([name])
    tokens = tok.encode(name, block_size)
    print(f'forward process on {name!r}: each of the {block_size} positions (PAD included) '
          'is masked with probability t ("{}" is MASK, "{}" is PAD)'.format(*marks(tok)))
    for tenth in range(11):
        # the same seed at every t: a position masked at one level stays masked above it
        noisy = md.mask(tokens, tenth / 10, tok.MASK, random.Random(args.seed))
        print(f'  t={tenth / 10:.1f}  {show(noisy, tok)}  '
              f'{noisy.count(tok.MASK) / block_size:4.0%} masked')
    return 0


def run_bench(args):
    """Figures for the current configuration, on this machine, in one process."""
    names = read_names(args.data)
    # A step's cost depends on the weights (how many ReLU units are alive): time trained ones.
    if os.path.exists(args.checkpoint):
        model, _ = load_checkpoint(args.checkpoint)
        weights = f'the weights in {args.checkpoint}'
    else:
        model = md.Model.new(md.Config(), md.Tokenizer.from_names(names))
        weights = 'freshly initialised weights (train first: trained ones cost differently)'
    cfg, tok, frozen = model.cfg, model.tok, model.frozen()
    names = [n for n in names if len(n) <= longest(cfg) and set(n) <= set(tok.chars)]
    if not names:
        raise UserError(f'{args.data}: has no name this model can hold; pass --data')
    adam = md.Adam(md.flatten(model.params), cfg)
    rng = random.Random(0)  # the same names each run; with replacement if there are too few
    picks = (rng.sample(names, args.repeats) if args.repeats <= len(names)
             else [rng.choice(names) for _ in range(args.repeats)])
    print(f'bench: {cfg.denoiser} with {len(adam.values):,} parameters, {weights}, batch size 1, '
          f'{sys.implementation.name} {sys.version.split()[0]}')
    masked, everywhere = [tok.MASK] * cfg.block_size, list(range(cfg.block_size))
    for label, fn in (('training step (forward + backward + Adam)',
                       lambda i: md.train_step(model, adam, [picks[i]], i)),
                      (f'forward pass, no graph, all {cfg.block_size} positions masked',
                       lambda i: frozen.logits(masked, everywhere)),
                      ('sampled name',
                       lambda i: md.sample_tokens(frozen, random.Random(i), md.Sampling()))):
        times = []
        for i in range(args.repeats):
            began = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - began)
        print(f'{label}: {statistics.median(times) * 1000:.1f} ms median of {args.repeats}',
              flush=True)
    sizes = [graph_size(model, tok.encode(name, cfg.block_size), random.Random(i))
             for i, name in enumerate(picks)]
    print(f'graph per training step: {statistics.median(s[0] for s in sizes):,.0f} nodes, '
          f'{statistics.median(s[1] for s in sizes):,.0f} edges (median)')
    return 0


def graph_size(model, tokens, rng):
    """(nodes, edges) of one name's training graph, counting what backward reaches."""
    loss = md.name_loss(model, (tokens, md.noise_levels(rng, model.cfg.t_min, 1)[0],
                                rng.random()))
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
        say(f'error: {e}')
    except ArithmeticError as e:  # only weights far outside anything training produces
        say(f'error: the model\'s numbers overflowed ({e}); is the checkpoint damaged?')
    except Interrupted as e:  # from run_training, which saved the last finished step
        say(f'interrupted: step {e.args[1]} saved in {args.checkpoint}; continue with "python '
            f'microdiffusion.py train --resume --checkpoint {args.checkpoint}"')
        return 128 + e.args[0]
    except KeyboardInterrupt:
        say('interrupted')
        return 130
    except BrokenPipeError:  # e.g. `sample | head -3`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 1
