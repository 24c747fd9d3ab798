"""Processes: the same results from one process or many. Training's names, sampled names and
scored names are shared out in order; every share carries its inputs and random seeds."""

import collections
import contextlib
import copy
import gc
import multiprocessing
import os
import random
import signal
import sys
import threading
import time

import microdiffusion as md
from lab.terminal import Interrupted, UserError, say
from value import Value

# The signals that stop work cleanly: Ctrl-C, kill, a closed terminal (where it exists).
STOP_SIGNALS = [getattr(signal, s) for s in ('SIGINT', 'SIGTERM', 'SIGHUP') if hasattr(signal, s)]
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
TRAIN_PROCESSES = 1 if sys.implementation.name == 'pypy' else CPUS  # PyPy pickles slowly


class Workers:
    """Shares of work done in order in n processes (1: in this one, no other), one under a
    debugger (a worker's breakpoint would fire unseen). Workers leave every signal to this
    process, which ends them however it ends; they end within a second if it is killed."""

    def __init__(self, n):
        monitoring = getattr(sys, 'monitoring', None)  # 3.12's debuggers
        if n > 1 and (sys.gettrace() is not None or (monitoring is not None and
                      monitoring.get_tool(monitoring.DEBUGGER_ID) is not None)):
            say('a debugger is attached: running in this one process')
            n = 1
        self.n, self.processes, self.pipes = n, [], []

    def __enter__(self):
        try:
            with signals_held():  # none reaches a worker before it ignores them
                for _ in range(self.n if self.n > 1 else 0):
                    mine, theirs = multiprocessing.Pipe()
                    self.pipes.append(mine)
                    process = multiprocessing.Process(target=_serve, args=(theirs, os.getpid()),
                                                      daemon=True)
                    process.start()
                    self.processes.append(process)
                    theirs.close()
        except BaseException as e:  # a signal, or a limit on processes or open files
            self.__exit__()
            if isinstance(e, OSError):
                raise UserError(f'cannot start {self.n} worker processes ({e.strerror or e}); '
                                'try --workers 1') from None
            raise
        return self

    def __exit__(self, *exc):
        with signals_held():  # all of them ended, whatever arrives meanwhile
            for process in self.processes:
                process.kill()
            for process in self.processes:
                process.join()
            for pipe in self.pipes:
                pipe.close()
            self.processes, self.pipes = [], []

    def map(self, kind, model, shares, stop=lambda: 0):
        """_job((kind, model, share)) for each share, in order: share k goes to worker k mod n,
        at most two a worker in flight (memory stays flat however many); raises Interrupted
        while waiting if stop() says so."""
        jobs = ((kind, model, share) for share in shares)
        if not self.processes:
            yield from map(_job, jobs)
            return
        pending = collections.deque()  # the worker of each share sent, oldest first
        for number, job in enumerate(jobs):
            worker = number % len(self.processes)
            try:
                self.pipes[worker].send(job)
            except OSError:
                self.failed(worker, stop)
            pending.append(worker)
            if len(pending) >= 2 * len(self.processes):
                yield self.result(pending.popleft(), stop)
        while pending:
            yield self.result(pending.popleft(), stop)

    def result(self, worker, stop):
        pipe = self.pipes[worker]
        while not pipe.poll(0.1):
            if stop() or not self.processes[worker].is_alive():
                self.failed(worker, stop)
        try:
            result = pipe.recv()
        except (OSError, EOFError):
            self.failed(worker, stop)
        if isinstance(result, Exception):  # raised in the worker: raised here
            raise result
        return result

    def failed(self, worker, stop):
        if stop():
            raise Interrupted(stop())
        raise UserError(f'a worker process ended unexpectedly (exit status '
                        f'{self.processes[worker].exitcode}: out of memory?); try --workers 1')


@contextlib.contextmanager
def signals_held():
    """Within it, the stop signals wait (where the system can hold them), then arrive."""
    holding = hasattr(signal, 'pthread_sigmask')
    if holding:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        if holding:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _serve(pipe, parent):
    """A worker: jobs in, results out, until the main process ends it."""
    for number in STOP_SIGNALS:  # the main process acts on them, and ends the workers
        signal.signal(number, signal.SIG_IGN)
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    without_cycle_collector()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()
    while True:
        try:
            job = pipe.recv()
        except (EOFError, OSError):
            os._exit(0)
        try:
            result = _job(job)
        except Exception as e:  # out of memory, an overflow: the main process says so
            result = e
        pipe.send(result)


def without_cycle_collector():
    """Values make no reference cycles, so CPython frees each graph by reference counting and
    its cyclic collector only rescans live Values (10% of a step). PyPy needs its collector."""
    if sys.implementation.name == 'cpython':
        gc.disable()


_replicas = {}  # in a worker: a model of Values for each class and configuration seen


def _local(model):
    """(a model of Values, its flattened Values): the model itself if it holds Values, else
    this process's copy set to its floats (making 6,848 Values a step cost 10% of a name)."""
    if isinstance(next(iter(model.params.values()))[0][0], Value):
        return model, md.flatten(model.params)
    key = (type(model), repr(model.cfg), repr(model.tok.chars))
    if key not in _replicas:
        params = {name: [[Value(x) for x in row] for row in rows]
                  for name, rows in model.params.items()}
        _replicas[key] = type(model)(model.cfg, model.tok, params), md.flatten(params)
    replica, values = _replicas[key]
    replica.lengths = model.lengths
    for name, rows in model.params.items():
        for row, floats in zip(replica.params[name], rows):
            for p, x in zip(row, floats):
                p.data = x
    return replica, values


# How a name is scored: an estimate of the NELBO, an exact -log p in one order, or a GPT's.
SCORES = {'random orders': md.nelbo,
          'one pass': lambda model, tokens, rng, seen: md.nelbo_one_pass(model, tokens, rng),
          'left-to-right': lambda model, tokens, rng, seen: md.left_to_right_nll(model, tokens),
          'exact': lambda model, tokens, rng, seen: model.nll(tokens, seen)}


def _job(job):
    """A share of names' gradients, samples or scores (see SCORES), here or in a worker."""
    kind, model, items = job
    if kind == 'gradients':
        model, values = _local(model)
        return [md.name_gradient(model, values, item) for item in items]
    if kind == 'samples':  # items: (seed, how, a list to trace the steps in or None)
        return [sampled(model, seed, how, trace) for seed, how, trace in items]
    return [SCORES[kind](model, tokens, random.Random(seed), seen)
            for tokens, seed, seen in items]


def sampled(model, seed, how, trace):
    """(a name, its trace, the forward passes it took), the passes counted as they are made."""
    passes, counting = [], copy.copy(model)
    counting.logits = lambda tokens, positions: passes.append(1) or model.logits(tokens,
                                                                                 positions)
    tokens = md.sample_tokens(counting, random.Random(seed), how, trace)
    return model.tok.decode(tokens), trace, len(passes)


def gradients_from(workers, model, stop):
    """train_step's gradients(items) for workers in other processes: shares of at most 8
    names, computed on copies of the model, stopping between names if stop() says so."""
    def gradients(items):
        size = min(8, -(-len(items) // workers.n))
        for share in workers.map('gradients', model.frozen(),
                                 [items[i:i + size] for i in range(0, len(items), size)], stop):
            for result in share:
                if stop():
                    raise Interrupted(stop())
                yield result
    return gradients


def enough(asked, items, size=None):
    """Workers for this many items, in shares of `size` (else as shares_of makes them): as
    many as asked, but never more than the shares."""
    return max(1, min(asked, -(-items // size) if size else len(shares_of(range(items)))))


def shares_of(items, most=50):
    """items in shares of at most `most`, at least ten shares when there are enough, so that
    progress shows however many there are."""
    size = max(1, min(most, len(items) // 10))
    return [items[i:i + size] for i in range(0, len(items), size)]


def nelbo_estimates(model, names, seed, workers, kind='random orders', progress=None, seen=0):
    """Each name's score in nats (see SCORES), each from its own seeded random generator; a
    window of text's, with seen > 0, for what follows its first `seen` characters."""
    rng, estimates = random.Random(f'{seed}:nelbo'), []
    items = [(model.encode(name), rng.getrandbits(64), seen) for name in names]
    for share in workers.map(kind, model.frozen(), shares_of(items)):
        estimates += share
        if progress:
            progress.update(len(estimates))
    return estimates


def sample_names(model, n, seed, how, workers, trace=False):
    """n (name, trace, forward passes), streamed as they are made: md.sample()'s names."""
    rng, frozen = random.Random(f'{seed}:sample'), model.frozen()
    how = md.prepared(frozen, how)
    shares = ([(rng.getrandbits(64), how, [] if trace else None) for _ in range(min(4, n - i))]
              for i in range(0, n, 4))  # shares of 4: the first names show at once
    for share in workers.map('samples', frozen, shares):
        yield from share
