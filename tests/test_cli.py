"""The command line, run for real in a subprocess: its output contract and its bad-input errors."""

import hashlib
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest
from xml.etree import ElementTree

from . import NAMES

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'microdiffusion.py')


def run(*args, cwd=None):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def run_all(runs, cwd=None):
    """run(*args) for each args in runs, side by side to save time."""
    processes = [subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=cwd) for args in runs]
    try:
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:  # none left running, whatever happened
            if process.poll() is None:
                process.kill()
                process.communicate()
    return [subprocess.CompletedProcess(args, process.returncode, *output)
            for args, process, output in zip(runs, processes, outputs)]


def on_a_terminal(*args, env=None, stop=None):
    """(status, stdout, what stderr drew) of a command whose stderr is a pseudo-terminal; stop,
    (marker, count, signal): the signal is sent once the marker has been drawn count times."""
    main, terminal = os.openpty()
    process = subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE,
                               stderr=terminal, text=True, env=dict(os.environ, **(env or {})))
    os.close(terminal)
    drawn = b''
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal's other end has closed
            break
        if not chunk:
            break
        drawn += chunk
        if stop and drawn.count(stop[0]) >= stop[1]:
            process.send_signal(stop[2])
            stop = None
    os.close(main)
    out = process.stdout.read()
    process.stdout.close()
    return process.wait(timeout=60), out, drawn


SHARED = {}  # made once for every test here: a small names file, a checkpoint trained on it


def setUpModule():
    SHARED['folder'] = tempfile.TemporaryDirectory()
    SHARED['data'] = os.path.join(SHARED['folder'].name, 'names.txt')
    with open(SHARED['data'], 'w') as f:
        f.write('\n'.join(NAMES) + '\n')
    SHARED['model'] = os.path.join(SHARED['folder'].name, 'model.json')
    result = run('train', '--data', SHARED['data'], '--steps', '40', '--denoiser', 'mlp',
                 '--batch-size', '4', '--checkpoint', SHARED['model'], '--workers', '1')
    assert result.returncode == 0, result.stderr


def tearDownModule():
    SHARED['folder'].cleanup()


class Folder(unittest.TestCase):
    """Each test gets a folder of its own, and the names file and the checkpoint trained on it
    (the mlp denoiser: the command line is the same, and it trains fast) that all share: no
    test writes to them."""

    @classmethod
    def setUpClass(cls):
        cls.shared = tempfile.TemporaryDirectory()
        cls.data, cls.model = SHARED['data'], SHARED['model']

    @classmethod
    def tearDownClass(cls):
        cls.shared.cleanup()

    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)

    def path(self, name):
        return os.path.join(self.folder.name, name)

    def write(self, name, content):
        mode = 'wb' if isinstance(content, bytes) else 'w'
        with open(self.path(name), mode) as f:
            f.write(content)
        return self.path(name)


class ContractTest(Folder):
    """What other tools rely on: stdout holds results only, and seeds make runs repeatable."""

    def test_sample_prints_only_names(self):
        result = run('sample', '--checkpoint', self.model, '--num', '7', '--seed', '3')
        self.assertEqual(result.returncode, 0, result.stderr)
        names = result.stdout.split('\n')
        self.assertEqual(names[-1], '')  # the output ends with a newline
        self.assertEqual(len(names), 8)
        letters = set(''.join(NAMES))
        for name in names[:-1]:
            self.assertTrue(set(name) <= letters, name)
            self.assertLessEqual(len(name), 16)

    def test_same_seed_same_names(self):
        sample = ['sample', '--checkpoint', self.model, '--num', '6', '--seed']
        first, again, other = (result.stdout for result in run_all(
            [sample + ['11'], sample + ['11', '--workers', '2'], sample + ['12']]))
        self.assertEqual(first, again)
        self.assertNotEqual(first, other)

    def test_same_seed_same_model(self):
        for result in run_all([['train', '--data', self.data, '--steps', '40', '--denoiser',
                                'mlp', '--checkpoint', self.path(f'm{workers}.json'),
                                '--workers', workers, '--batch-size', '3']
                               for workers in ('1', '2')]):
            self.assertEqual(result.returncode, 0, result.stderr)
        with open(self.path('m1.json')) as a, open(self.path('m2.json')) as b:
            self.assertEqual(json.load(a)['params'], json.load(b)['params'])

    def test_checkpoint_layout(self):
        with open(self.model) as f:
            doc = json.load(f)
        self.assertEqual(doc['chars'], sorted(set(''.join(NAMES))))
        for key in ('n_embd', 'n_head', 'n_layer', 'block_size'):
            self.assertIsInstance(doc['config'][key], int)
        self.assertEqual(set(doc['params']), {'mlp_in', 'mlp_out'})
        self.assertEqual(doc['training']['step'], 40)

    def test_pattern_trace_and_stats(self):
        result = run('sample', '--checkpoint', self.model, '--num', '5', '--pattern', 'm_r__',
                     '--trace', '--stats', '--data', self.data)
        self.assertEqual(result.returncode, 0, result.stderr)
        names = result.stdout.split()
        self.assertEqual(len(names), 5)
        for name in names:
            self.assertRegex(name, '^m.r..$')
        self.assertIn('reverse process', result.stderr)
        self.assertRegex(result.stderr, r'step +\d+ +t=0\.\d+ +T=0\.\d+ +m[a-z_]r[a-z_]{2}\.\n')
        self.assertIn('unique', result.stderr)
        self.assertIn('length histogram', result.stderr)

    def test_temperatures_follow_the_flags(self):
        result = run('sample', '--checkpoint', self.model, '--num', '1', '--trace',
                     '--temp-start', '2', '--temp-end', '0.5', '--temperature', '0.8',
                     '--pattern', '_' * 9,  # nine letters: no length to draw
                     '--steps', '64', '--loop-passes', '0')  # the schedule alone
        self.assertEqual(result.returncode, 0, result.stderr)
        steps = re.findall(r't=(\d\.\d+) +T=(\d\.\d+)', result.stderr)
        self.assertEqual(len(steps), 9)  # one line per step that decides one of 9 letters
        for t, T in steps:
            self.assertAlmostEqual(float(T), 0.8 * (0.5 + 1.5 * float(t)), delta=0.002)

    def test_eval_last_line(self):
        result = run('eval', '--checkpoint', self.model, '--data', self.data, '--workers', '2')
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.strip().split('\n')
        self.assertRegex(lines[-1], r'^NELBO \d+\.\d+ nats/name  \d+\.\d+ bits/char  \(36 names\)$')
        self.assertRegex(lines[0], r'± \d+\.\d+ nats/name')

    def test_forward(self):
        for padding, first, last in (([], 'emma.', '____.'),  # the end is never erased
                                     (['--padding'], 'emma' + '.' * 12, '_' * 16)):
            result = run('forward', 'emma', '--seed', '2', *padding)
            self.assertEqual(result.returncode, 0, result.stderr)
            rows = [line for line in result.stdout.split('\n') if 't=' in line]
            self.assertEqual(len(rows), 11)
            self.assertEqual(rows[0].split()[1], first)
            self.assertEqual(rows[-1].split()[1], last)
            masked = [row.split()[1].count('_') for row in rows]
            self.assertEqual(masked, sorted(masked))  # once masked, masked at every higher t

    def test_ctrl_c_saves_and_resume_finishes(self):
        # relative paths, as a user types them: the printed command must run from this folder
        shutil.copy(self.data, self.path('my names.txt'))
        args = ['train', '--data', 'my names.txt', '--steps', '300', '--denoiser', 'mlp',
                '--batch-size', '4', '--checkpoint', 'run.json', '--workers', '1']
        straight = subprocess.Popen(  # the same run, not stopped, beside it
            [sys.executable, SCRIPT, 'train', *args[1:-4], '--checkpoint', 'straight.json',
             '--workers', '1'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=self.folder.name)
        self.addCleanup(ReliabilityTest.end, straight)
        process = subprocess.Popen([sys.executable, SCRIPT, *args], stderr=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, cwd=self.folder.name)
        for line in process.stderr:  # the first progress line: training is under way
            if line.startswith('step '):
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 130, err)
        self.assertNotIn('Traceback', err)
        again = re.search(r'^interrupted: step \d+ saved in run.json; continue with "(.*)"$', err,
                          re.M).group(1)
        self.assertIn("--data 'my names.txt'", again)
        with open(self.path('run.json')) as f:
            step = json.load(f)['training']['step']
        self.assertLess(0, step)
        self.assertLess(step, 300)
        resumed = subprocess.run(shlex.split(again), capture_output=True, text=True,
                                 cwd=self.folder.name, timeout=120)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        self.assertIn(f'resuming run.json at step {step} of 300', resumed.stderr)
        _, err = straight.communicate(timeout=120)
        self.assertEqual(straight.returncode, 0, err)
        with open(self.path('run.json')) as a, open(self.path('straight.json')) as b:
            self.assertEqual(json.load(a)['params'], json.load(b)['params'])

    def test_a_damaged_training_section_stops_only_resume(self):
        # sample and eval need chars, config, params and lengths; only --resume needs the rest
        with open(self.model) as f:
            good = f.read()

        def variant(name, change):
            doc = json.loads(good)
            change(doc['training'])
            return self.write(name, json.dumps(doc))
        garbage = self.write('garbage.json', good[:-1] + ', "training": "garbage"}')
        settings = variant('settings.json', lambda t: t.update(settings='?'))
        null = variant('null.json', lambda t: t['history'][3].__setitem__(2, None))
        future = variant('future.json', lambda t: t['history'][3].__setitem__(0, 10**9))
        runs = [['sample', '--checkpoint', garbage, '--num', '3'],
                ['eval', '--checkpoint', garbage, '--data', self.data],
                ['sample', '--checkpoint', garbage, '--num', '3', '--stats', '--data', self.data]]
        runs += [['sample', '--checkpoint', path, '--num', '3', '--stats']  # the data recorded
                 for path in (settings, null)]
        for result in run_all(runs):
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(len(result.stdout.split('\n')), 4 if 'sample' in result.args else 3)
            if '--stats' in result.args:  # against the data it was trained on, not names.txt
                self.assertIn(f'(data {sum(map(len, NAMES)) / len(NAMES):.2f})', result.stderr)
        refused = run_all([['sample', '--checkpoint', garbage, '--stats'],
                           ['eval', '--checkpoint', garbage]] + [
                          ['train', '--resume', '--checkpoint', path, '--data', self.data,
                           '--steps', '80'] for path in (garbage, settings, null, future)])
        for result, message in zip(refused, ['the data it was trained on is not at hand .*; '
                                             'pass --data FILE$'] * 2 + [
                'has no training state', 'must hold the run\'s "settings"', 'history must be',
                'history must be']):
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertRegex(result.stderr, '^error: .*' + message + '.*\n$')

    def test_nothing_held_out(self):
        # five names: none held out, so no validation to crash and nothing for eval to score
        tiny = self.write('tiny.txt', 'emma\nava\nmia\nzoe\nli\n')
        model = self.path('tiny.json')
        trained = run('train', '--data', tiny, '--steps', '5', '--denoiser', 'mlp',
                      '--checkpoint', model, '--workers', '1')
        self.assertEqual(trained.returncode, 0, trained.stderr)
        self.assertIn('on 5 names (0 held out)', trained.stderr)
        # a checkpoint whose settings hold out nothing, its data fingerprint to match
        with open(self.model) as f:
            doc = json.load(f)
        doc['training']['settings']['val_size'] = 0
        doc['training']['data_fingerprint'] = hashlib.sha256(
            '\n'.join(NAMES).encode()).hexdigest()[:16]
        none_held = self.write('none-held.json', json.dumps(doc))
        results = run_all([['eval', '--checkpoint', model],
                           ['sample', '--checkpoint', model, '--num', '4', '--stats'],
                           ['train', '--resume', '--data', tiny, '--checkpoint', model,
                            '--steps', '10', '--workers', '1'],
                           ['train', '--resume', '--data', self.data, '--checkpoint', none_held,
                            '--steps', '45', '--workers', '1']])
        self.assertEqual((results[0].returncode, results[0].stderr), (1, f'error: {model}: '
                         'nothing of its data was held out; pass --data\n'))
        self.assertIn('(data 3.00)', results[1].stderr)  # tiny.txt's names, not names.txt's
        for result, checkpoint, step in ((results[2], model, 10), (results[3], none_held, 45)):
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(checkpoint) as f:
                self.assertEqual(json.load(f)['training']['step'], step)

    def test_gpt_trains_evaluates_and_samples(self):
        gpt = self.path('gpt.json')
        result = run('train', '--model', 'gpt', '--data', self.data, '--steps', '8',
                     '--batch-size', '4', '--checkpoint', gpt, '--workers', '2')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('val NLL', result.stderr)
        # four letters in the pattern of the scored run: the 40-step model has not learned
        # where names end, and the GPT can only score names shorter than its block
        bench, result, names, again, scored, ordered = run_all([
            ['bench', '--checkpoint', gpt, '--data', self.data, '--repeats', '3'],
            ['eval', '--checkpoint', gpt, '--data', self.data],
            ['sample', '--checkpoint', gpt, '--num', '6', '--pattern', 'ja*'],
            ['sample', '--checkpoint', gpt, '--num', '6', '--pattern', 'ja*', '--workers', '1'],
            ['sample', '--checkpoint', self.model, '--num', '4', '--stats', '--data', self.data,
             '--score-with', gpt, '--pattern', '____'],
            ['eval', '--checkpoint', self.model, '--data', self.data, '--order',
             'left-to-right']])
        # bench's forward pass reads what a GPT reads: the start token and a name's letters
        self.assertEqual(bench.returncode, 0, bench.stderr)
        read = int(re.search(r'forward pass.*: (\d+) positions, the start token and the letters',
                             bench.stdout).group(1))
        self.assertLess(1, read)
        self.assertLess(read, max(map(len, NAMES)) + 1)
        self.assertRegex(result.stdout.strip().split('\n')[-1],
                         r'^NLL \(GPT, exact\) \d+\.\d+ nats/name  \d+\.\d+ bits/char  '
                         r'\(36 names\)$')
        names = names.stdout.split()
        self.assertEqual(len(names), 6)
        self.assertTrue(all(n.startswith('ja') and len(n) < 16 for n in names), names)
        self.assertEqual(again.stdout.split(), names)
        self.assertRegex(scored.stderr, r'scored by .*gpt.json: samples \d+\.\d+ nats/name.*; '
                                        r'held-out real names \d+\.\d+ nats/name')
        self.assertRegex(ordered.stdout, r'NLL \(left to right, exact\) \d+\.\d+ nats/name')

    @unittest.skipIf(sys.version_info[:3] == (3, 13, 0),
                     "3.13.0's pdb reads the script's own options (--data ...) as its own")
    def test_a_breakpoint_stops_in_the_main_process(self):
        commands = ['b microdiffusion.diffusion_loss', 'c', 'p t > 0',
                    "p __import__('multiprocessing').current_process().name", 'w', 'q']
        result = subprocess.run(
            [sys.executable, '-m', 'pdb', SCRIPT, 'train', '--data', self.data, '--steps', '2',
             '--checkpoint', self.path('debugged.json'), '--workers', '2'],
            input='\n'.join(commands) + '\n', capture_output=True, text=True, timeout=120)
        self.assertIn('a debugger is attached: running in this one process', result.stderr)
        self.assertIn('-> ', result.stdout)  # pdb stopped, and answered in the main process:
        self.assertIn("True\n(Pdb) 'MainProcess'", result.stdout)
        # the way from the command line to the loss: the lesson runs the lab, which calls the
        # lesson once (train_step) and never again itself
        here = os.path.dirname(SCRIPT) + os.sep
        rooms = [('lab' if path.startswith(here + 'lab' + os.sep) else 'lesson') for path in
                 re.findall(r'^[ >] (\S+\.py)\(\d+\)', result.stdout, re.M)
                 if path.startswith(here)]
        self.assertEqual([room for k, room in enumerate(rooms) if rooms[k - 1:k] != [room]],
                         ['lesson', 'lab', 'lesson'])
        self.assertEqual(rooms[-1], 'lesson')

    def test_your_own_words_and_model_size(self):
        # words up to 24 characters, with capitals, a hyphen, an apostrophe, '_' and '.'
        words = ['Jean-Pierre', 'Anne-Marie-Louise-Claire', "O'Neill", 'snake_case', 'e.g.',
                 'Mary-Kate', 'Jo', 'Bartholomew-Fitzgerald', 'Zoë', 'Ann', 'Mont-Saint-Michel',
                 'Ana', 'Lee', 'Bo', 'Kai'] * 2
        data = self.write('words.txt', '\n'.join(words) + '\n')
        model = self.path('words.json')
        tiny = ['--n-embd', '8', '--n-head', '2', '--n-layer', '1', '--batch-size', '2']
        result = run('train', '--data', data, '--steps', '3', '--checkpoint', model, *tiny)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('(1 layers of 8, 2 heads, 25 positions; ', result.stderr)  # 24 + one PAD
        with open(model) as f:
            self.assertEqual(json.load(f)['config']['block_size'], 25)
        resumed = run('train', '--resume', '--data', data, '--steps', '5', '--checkpoint', model)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        result = run('sample', '--checkpoint', model, '--num', '3', '--trace')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('("▒" is MASK, "·" is PAD)', result.stderr)  # '_' and '.' are letters here
        self.assertEqual(len(result.stdout.split('\n')), 4)
        result = run('eval', '--checkpoint', model)  # the held-out split of words.txt
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('words.txt validation split', result.stdout)
        self.assertRegex(result.stdout, r'\(1 names,')  # a tenth of 15 distinct words
        short = run('train', '--data', data, '--block-size', '20', '--checkpoint', model)
        self.assertEqual(short.returncode, 1)
        self.assertIn("line 2: 'Anne-Marie-Louise-Claire' has 24 characters", short.stderr)

    @unittest.skipUnless(hasattr(os, 'openpty'), 'needs a pseudo-terminal')
    def test_animation_on_a_terminal(self):
        sample = ['sample', '--checkpoint', self.model, '--num', '3', '--seed', '5']
        plain = run(*sample).stdout
        status, out, drawn = on_a_terminal(*sample, '--animate', '--fps', '1000',
                                           env={'NO_COLOR': ''})
        self.assertEqual((status, out), (0, plain))  # the same names as without the flag
        self.assertIn(b'\x1b[3A', drawn)              # the block is redrawn in place
        self.assertIn(b'\x1b[2;33m_', drawn)          # MASK in colour
        self.assertTrue(drawn.endswith(b'\x1b[0m\x1b[?25h'))  # and the cursor shown again
        status, out, drawn = on_a_terminal(*sample, '--animate', '--fps', '1000',
                                           env={'NO_COLOR': '1'})
        self.assertEqual(out, plain)
        self.assertNotIn(b'\x1b[2', drawn)            # plain marks
        self.assertIn(b'_', drawn)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the cursor given back
            status, out, drawn = on_a_terminal(*sample, '--animate', '--fps', '20', '--compare',
                                               self.model, stop=(b'\x1b[3A', 2, number))
            self.assertEqual(status, 128 + number)
            self.assertTrue(drawn.endswith(b'\x1b[0m\x1b[?25hinterrupted\r\n'), drawn[-40:])
        status, out, drawn = on_a_terminal(*sample, '--animate', env={'TERM': 'dumb'})
        self.assertEqual((status, out), (0, plain))  # a terminal that cannot draw: no escapes
        self.assertNotIn(b'\x1b', drawn)
        piped = run(*sample, '--animate')  # not a terminal: exactly as without the flag
        self.assertEqual((piped.stdout, piped.stderr), (plain, ''))

    @unittest.skipUnless(hasattr(os, 'openpty'), 'needs a pseudo-terminal')
    def test_progress_of_a_long_eval(self):
        # 20,000 names take a while: the progress line shows after the first 50
        names = self.write('many.txt', '\n'.join(NAMES * 556) + '\n')
        status, out, drawn = on_a_terminal('eval', '--checkpoint', self.model, '--data', names,
                                           '--workers', '1', stop=(b'name 100/20016 ', 1,
                                                                   signal.SIGINT))
        self.assertEqual(status, 130)
        self.assertIn(b'\rname 50/20016  ', drawn)
        self.assertIn(b'left\x1b[K', drawn)  # rewritten in place
        status, out, drawn = on_a_terminal('eval', '--checkpoint', self.model, '--data', self.data,
                                           env={'TERM': 'dumb'})
        self.assertEqual(status, 0, drawn)
        self.assertIn(b'name 36/36 ', drawn)  # a line at a time, no escapes
        self.assertNotIn(b'\x1b', drawn)

    def test_svg_of_the_reverse_process(self):
        picture = self.path('reverse.svg')
        result = run('sample', '--checkpoint', self.model, '--num', '12', '--svg', picture,
                     '--trace', '--pattern', '_' * 9)
        self.assertEqual(result.returncode, 0, result.stderr)
        root = ElementTree.parse(picture).getroot()
        groups = root.findall('{http://www.w3.org/2000/svg}g')
        steps = result.stderr.count('\n  step') // 12  # every name decides 9 letters
        self.assertEqual(len(groups), steps + 1 + 6)     # the start, each step, the hold
        for group in groups:
            self.assertEqual(len(group.findall('{http://www.w3.org/2000/svg}text')), 8)
            self.assertEqual(len(group.findall('{http://www.w3.org/2000/svg}animate')), 1)
        texts = groups[-1].findall('{http://www.w3.org/2000/svg}text')
        last = [''.join(t.itertext()) for t in texts]
        self.assertEqual([name.rstrip('.') for name in last], result.stdout.split()[:8])

    def test_bench(self):
        # in a folder of its own: no model.json there, so fresh weights on names.txt
        result = run('bench', '--repeats', '3', cwd=self.folder.name)
        self.assertEqual(result.returncode, 0, result.stderr)
        # names.txt: 26 letters, MASK and PAD, and the lab's transformer: 6,848 weights
        self.assertRegex(result.stdout, r'^bench: transformer with 6,848 parameters, freshly '
                                        'initialised weights')
        for label in ('training step', 'forward pass', 'sampled name'):
            self.assertRegex(result.stdout, label + r'.*: \d+\.\d ms median of 3\n')
        self.assert_reads_and_graph(result.stdout)

    def assert_reads_and_graph(self, printed):
        """A median name's letters masked and its end in view; a graph of more edges than
        nodes (a dot node has a child for each of its numbers)."""
        positions, masked = map(int, re.search(r'median name: (\d+) positions, (\d+) masked',
                                               printed).groups())
        self.assertEqual(positions, masked + 1)
        self.assertLessEqual(positions, 16)
        nodes, edges = (int(x.replace(',', '')) for x in re.search(
            r'graph per training step: ([\d,]+) nodes, ([\d,]+) edges', printed).groups())
        self.assertLess(100, nodes)
        self.assertLess(nodes, edges)


class BadInputTest(Folder):
    """Every mistake ends with one readable line on stderr, a non-zero exit status, no
    traceback, and every file exactly as it was."""

    def assert_refused(self, args, message, files=(), result=None, before=None):
        files = [self.data, self.model] + list(files)
        before = before or {f: self.snapshot(f) for f in files}
        result = result or run(*args, cwd=self.folder.name)
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn('Traceback', result.stderr)
        lines = result.stderr.strip().split('\n')
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertRegex(lines[0], message)
        for f in files:
            self.assertEqual(self.snapshot(f), before[f], f'{f} changed')
        self.assertEqual(result.stdout, '')

    @staticmethod
    def snapshot(path):
        if os.path.isdir(path):
            return sorted(os.listdir(path))
        if not os.path.exists(path):
            return None
        with open(path, 'rb') as f:
            return f.read(), os.stat(path).st_mtime_ns

    def train(self, data, *more):
        return ['train', '--data', data, '--checkpoint', self.model, '--steps', '5', *more]

    def test_bad_data_files(self):
        cases = [(self.path('missing.txt'), 'no such file'),
                 (self.folder.name, 'is a folder'),
                 (os.path.join(self.data, 'x'), 'cannot be read'),
                 (self.write('empty.txt', ''), 'has no names'),
                 (self.write('blank.txt', '\n   \n\t\n'), 'has no names'),
                 (self.write('latin1.txt', b'emma\nzo\xeb\n'), 'line 2: is not UTF-8'),
                 (self.write('long.txt', 'emma\n\n' + 'x' * 17 + '\n'),
                  'line 3: .* has 17 characters')]
        for data, message in cases:  # the block size follows the data unless it is given
            with self.subTest(data=data):
                self.assert_refused(self.train(data, '--block-size', '16'), message, [data])

    def test_bad_checkpoints(self):
        with open(self.model) as f:
            good = json.load(f)
        wrong_shape = json.loads(json.dumps(good))
        wrong_shape['params']['mlp_in'] = wrong_shape['params']['mlp_in'][:-1]
        wrong_config = json.loads(json.dumps(good))
        wrong_config['config']['block_size'] = 12
        cases = [(self.path('missing.json'), 'no such checkpoint'),
                 (self.write('text.json', 'this is not json'), 'not JSON'),
                 (self.write('list.json', '[1, 2]'), 'not a valid'),
                 (self.write('shape.json', json.dumps(wrong_shape)), 'mlp_in should be'),
                 (self.write('config.json', json.dumps(wrong_config)), 'should be'),
                 (self.write('nan.json', json.dumps(good).replace(
                     str(good['params']['mlp_out'][0][0]), 'NaN', 1)), 'not a finite number'),
                 (self.write('inf.json', json.dumps(good).replace(
                     str(good['params']['mlp_out'][0][0]), '-Infinity', 1)), 'not a finite')]
        runs = [(command + ['--checkpoint', checkpoint], message, checkpoint)
                for checkpoint, message in cases
                for command in (['sample'], ['eval', '--data', self.data])]
        self.assert_all_refused(runs)

    def assert_all_refused(self, runs):
        """assert_refused for each (args, message, file), the runs side by side to save time:
        each only reads its own checkpoint, and every file is checked after them all."""
        files = {f for _, _, f in runs} | {self.data, self.model}
        before = {f: self.snapshot(f) for f in files}
        results = run_all([args for args, _, _ in runs], cwd=self.folder.name)
        for (args, message, _), result in zip(runs, results):
            with self.subTest(args=args):
                self.assert_refused(args, message, files, result, before)

    def test_resume_with_other_data(self):
        other = self.write('other.txt', 'zed\nquinn\nxavier\n')
        self.assert_refused(['train', '--resume', '--data', other, '--checkpoint', self.model],
                            'vocabulary', [other])
        more = self.write('more.txt', '\n'.join(NAMES + ['emmalee']) + '\n')
        self.assert_refused(['train', '--resume', '--data', more, '--checkpoint', self.model,
                             '--steps', '80'], 'not the data', [more])
        self.assert_refused(['train', '--resume', '--data', self.data, '--checkpoint',
                             self.model], 'already trained for 40 steps')
        self.assert_refused(['train', '--resume', '--data', self.data, '--checkpoint',
                             self.model, '--lr', '0.5', '--steps', '80'], '--lr')

    def test_bad_flags(self):
        sample = ['sample', '--checkpoint', self.model]
        cases = [(self.train(self.data) + ['--steps', '0'], '--steps: 0 is below the minimum'),
                 (self.train(self.data) + ['--batch-size', '0'], '--batch-size'),
                 (self.train(self.data) + ['--steps', 'many'], 'not a whole number'),
                 (sample + ['--num', '0'], '--num'),
                 (sample + ['--steps', '-3'], '--steps'),
                 (self.train(self.data) + ['--workers', '0'], '--workers')]
        for bad in ('0', '-1', 'nan', 'inf', 'fast'):  # one parser checks every float flag
            cases.append((self.train(self.data) + ['--lr', bad], '--lr'))
        for bad in ('0', 'nan'):
            cases.append((sample + ['--temperature', bad], '--temperature'))
            cases.append((sample + ['--temp-end', bad], '--temp-end'))
        cases += [(['fly'], "invalid choice: 'fly'"),
                  (['sample', '--colour'], 'unrecognized arguments: --colour'),
                  (sample + ['--remask', 'sometimes'], '--remask'),
                  (sample + ['--pattern', 'a' * 17], 'names have at most 9'),  # the longest
                  (sample + ['--pattern', 'zo_'], "'z' not in the vocabulary"),
                  (sample + ['--pattern', 'a*b*'], "may stand only once"),
                  (['forward', 'a' * 16], '1 to 15 characters'),
                  (self.train(self.data) + ['--model', 'gpt', '--denoiser', 'mlp'],
                   'a GPT is the transformer'),
                  (sample + ['--order', 'left-to-right', '--remask', 'random'], '--remask: '),
                  (sample + ['--order', 'left-to-right', '--length', 'first'], '--length: '),
                  (sample + ['--length', 'later'], '--length'),
                  (sample + ['--order', 'sideways'], '--order'),
                  (sample + ['--compare', self.model], 'use it with --animate'),
                  (self.train(self.data) + ['--n-head', '0'], '--n-head: 0 is below the minimum'),
                  (self.train(self.data) + ['--n-layer', '100000'], 'above the maximum, 64'),
                  (self.train(self.data) + ['--n-embd', '12', '--n-head', '5'],
                   'n_embd 12 is not a multiple of n_head 5'),
                  (self.train(self.data) + ['--n-embd', '1024', '--n-layer', '64'],
                   'more than 200,000 parameters'),
                  (self.train(self.data) + ['--n-embd', '8', '--n-head', '8', '--n-layer', '64',
                                            '--block-size', '256'],
                   'more than 2,000,000 attention scores a name'),
                  (sample + ['--fps', '1e-300'], 'argument --fps: 1e-300 must be a finite'),
                  # a flag that only means something beside another is refused, not ignored
                  (sample + ['--score-with', self.model], '--score-with is for --stats'),
                  (sample + ['--data', self.data], '--data is for --stats'),
                  # a missing file is named by its own flag
                  (sample + ['--stats', '--score-with', 'gone.json'],
                   '^error: --score-with gone.json: no such checkpoint'),
                  (sample + ['--animate', '--compare', 'gone.json'],
                   '^error: --compare gone.json: no such checkpoint'),
                  (sample + ['--svg', ''], 'argument --svg: give a file name, not an empty one'),
                  (['eval', '--checkpoint', self.model, '--data', ''], 'argument --data: give')]
        self.assert_all_refused([(args, message, self.data) for args, message in cases])

    def test_outputs_that_collide_or_cannot_be_written(self):
        # every case refused before any work, the flag at fault named, no file touched
        link, hard, other = self.path('link.txt'), self.path('hard.txt'), self.path('other.json')
        os.symlink(self.data, link)
        os.link(self.data, hard)
        shutil.copy(self.model, other)
        notes = self.write('notes.txt', 'my notes, not a checkpoint\n')
        sample = ['sample', '--checkpoint', self.model]

        def same(output, other):
            return f'^error: {output} .*: is the same file as {other} .*; choose another {output}$'
        cases = [(self.train(self.data, '--checkpoint', self.data), same('--checkpoint', '--data')),
                 (self.train(link, '--checkpoint', self.data), same('--checkpoint', '--data')),
                 (self.train(hard, '--checkpoint', self.data), same('--checkpoint', '--data')),
                 (self.train(self.data, '--curve', self.model), same('--curve', '--checkpoint')),
                 (self.train(self.data, '--curve', hard), same('--curve', '--data')),
                 (['train', '--resume', '--data', self.data, '--checkpoint', self.model, '--curve',
                   self.model, '--steps', '80'], same('--curve', '--checkpoint')),
                 (sample + ['--svg', self.model], same('--svg', '--checkpoint')),
                 (sample + ['--stats', '--data', self.data, '--svg', hard],
                  same('--svg', '--data')),
                 (sample + ['--stats', '--score-with', other, '--svg', other],
                  same('--svg', '--score-with')),
                 # an existing file is replaced only if it holds what would replace it
                 (self.train(self.data, '--checkpoint', notes),
                  '^error: --checkpoint .*notes.txt: holds something other than a checkpoint'),
                 (sample + ['--svg', notes], '^error: --svg .*: holds something other than a '
                                             'picture'),
                 (self.train(self.data, '--curve', notes), '^error: --curve .*: holds something'),
                 # a name the system refuses fails now, not at the first save
                 (self.train(self.data, '--checkpoint', self.path('m' * 300 + '.json')),
                  r'^error: --checkpoint .*: cannot write a checkpoint there \(File name too long'),
                 (sample + ['--svg', self.path('s' * 300 + '.svg')],
                  r'^error: --svg .*: cannot write a picture there \(File name too long'),
                 (self.train(self.data, '--curve', self.folder.name), '^error: --curve .*: is a '
                                                                      'folder'),
                 (sample + ['--svg', os.path.join(self.folder.name, 'no', 'x.svg')],
                  '^error: --svg .*: cannot write a picture there')]
        self.assert_all_refused([(args, message, f) for (args, message), f in
                                 zip(cases, [hard, notes, other] * len(cases))])

    def test_unbounded_input(self):
        big = self.write('big.json', '')
        with open(big, 'wb') as f:  # sparse: costs no disk
            f.truncate(33 * 2**20)
        long_line = self.write('long.txt', 'emma\n' + 'a' * 1023 + '\n')
        utf16 = self.write('utf16.txt', 'emma\nzoë\n'.encode('utf-16-le'))
        utf16be = self.write('utf16be.txt', 'emma\nava\n'.encode('utf-16-be'))
        cases = [(['train', '--data', '/dev/zero', '--checkpoint', 'new.json'],
                  r'^error: /dev/zero: is larger than 16 MB'),
                 (['eval', '--checkpoint', self.model, '--data', '/dev/zero'], 'larger than 16 MB'),
                 (['train', '--data', long_line, '--checkpoint', 'new.json'],
                  'line 2: .* has 1023 characters, more than the 255 a name can have'),
                 (['train', '--data', utf16, '--checkpoint', 'new.json'],
                  r'line 1: holds a control character, not text \(is it UTF-16\?\)'),
                 (['eval', '--checkpoint', self.model, '--data', utf16be], 'control character'),
                 (['sample', '--checkpoint', big], r'big.json: is larger than 32 MB'),
                 (['train', '--resume', '--checkpoint', big, '--data', self.data],
                  'is larger than 32 MB')]
        self.assert_all_refused([(args, message, f) for (args, message), f in
                                 zip(cases, [big, long_line, utf16, utf16be] * len(cases))])
        self.assertFalse(os.path.exists(self.path('new.json')))

    def test_hostile_checkpoints(self):
        with open(self.model) as f:
            good = f.read()
        doc = json.loads(good)

        def variant(name, change, text=None):
            changed = json.loads(good)
            if change:
                change(changed)
            return self.write(name, text or json.dumps(changed))

        def char(c):
            return lambda d: d['chars'].__setitem__(0, c)
        chars = '"chars" must list distinct single characters, no control characters but tab'
        cases = [(variant('newline.json', char('\n')), chars),  # a name would print as two
                 (variant('escape.json', char('\x1b')), chars),  # a terminal escape
                 (variant('delete.json', char('\x7f')), chars),
                 (variant('surrogate.json', None, good.replace(
                     json.dumps(doc['chars'][0]), '"\\ud800"', 1)), chars),
                 (variant('nested.json', char([1])), chars),
                 (variant('twice.json', char(doc['chars'][1])), chars),
                 (variant('gpt-mlp.json', lambda d: d.update(version=2, config=dict(
                     d['config'], model='gpt', denoiser='mlp'))), 'a GPT is the transformer'),
                 (variant('no-such.json', lambda d: d.update(variant='gpt-mlp')),
                  '"variant" must be one of'),
                 (variant('empty-name.json', lambda d: d['lengths'].__setitem__(0, 0.5)),
                  '"lengths" must be'),
                 (variant('huge-setting.json', lambda d: d['config'].update(n_embd='x' * 10**5)),
                  "config n_embd = 'xxxxx"),
                 (variant('scores.json', lambda d: d.update(variant='diffusion', config=dict(
                     n_embd=8, n_head=8, n_layer=64, block_size=256))),
                  'more than 2,000,000 attention scores a name')]
        runs = [(['sample', '--checkpoint', path], message, path) for path, message in cases]
        runs += [(['eval', '--data', self.data, '--checkpoint', path], message, path)
                 for path, message in cases[::4]]  # eval reads checkpoints as sample does
        self.assert_all_refused(runs)

    def test_unwritable_checkpoint_fails_before_training(self):
        nowhere = os.path.join(self.folder.name, 'no', 'such', 'folder', 'model.json')
        # one line on stderr and nothing else: no progress line, so not one step was trained
        self.assert_refused(['train', '--data', self.data, '--checkpoint', nowhere,
                             '--steps', '100000'], 'cannot write a checkpoint there')
        self.assert_refused(['train', '--data', self.data, '--checkpoint', self.folder.name],
                            'is a folder')

    def test_divergence_keeps_the_last_checkpoint(self):
        before = self.snapshot(self.model)
        result = run('train', '--data', self.data, '--checkpoint', self.model, '--lr', '1e100',
                     '--steps', '200', '--workers', '1')
        self.assertEqual(result.returncode, 1)
        self.assertNotIn('Traceback', result.stderr)
        # training had started, so progress came first; the run ends with the one-line error
        self.assertRegex(result.stderr.strip().split('\n')[-1],
                         r'^error: training diverged at step \d+ .* is untouched; '
                         'try a smaller --lr$')
        self.assertEqual(self.snapshot(self.model), before)


class ReliabilityTest(Folder):
    """Nothing clobbered, nothing lost: checkpoint paths, signals, workers, stderr, memory."""

    def train_args(self, checkpoint, *more):
        return ['train', '--data', self.data, '--denoiser', 'mlp', '--batch-size', '4',
                '--checkpoint', checkpoint, *more]

    def start(self, checkpoint, *more):
        """A training run in the background, once its first line is out."""
        process = subprocess.Popen([sys.executable, SCRIPT, *self.train_args(checkpoint, *more)],
                                   stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(self.end, process)
        process.first_line = process.stderr.readline()
        return process

    @staticmethod
    def end(process):
        if process.poll() is None:
            process.kill()
        process.communicate()

    def test_the_checkpoint_is_only_ever_a_regular_file(self):
        fifo = self.path('fifo')
        os.mkfifo(fifo)
        readonly = self.write('readonly.json', 'keep me')
        os.chmod(readonly, 0o444)
        for path, message, status in ((fifo, 'not a regular file', 1), (readonly, 'read-only', 1),
                                      ('', 'give a file name', 2),
                                      (self.path('out') + '/', 'give a file', 1)):
            result = run(*self.train_args(path, '--steps', '2'))
            self.assertEqual(result.returncode, status, result.stderr)
            self.assertEqual(result.stderr.count('\n'), 1, result.stderr)
            self.assertIn(message, result.stderr)
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))
        with open(readonly) as f:
            self.assertEqual(f.read(), 'keep me')
        target, link = self.write('target.json', ''), self.path('link.json')
        os.chmod(target, 0o600)
        os.symlink(target, link)
        result = run(*self.train_args(link, '--steps', '2', '--workers', '1'))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(os.path.islink(link))  # the link is followed, its target replaced
        self.assertEqual(stat.S_IMODE(os.stat(target).st_mode), 0o600)
        with open(target) as f:
            self.assertEqual(json.load(f)['training']['step'], 2)

    def test_sigterm_mid_step_saves_the_last_step(self):
        # a step of 3,000 names takes seconds: the signal is acted on between names
        checkpoint = self.path('run.json')
        process = self.start(checkpoint, '--steps', '5', '--batch-size', '3000', '--workers', '2')
        self.assertIn('training a', process.first_line)  # said once the handlers are in place
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 128 + signal.SIGTERM, err)
        self.assertNotIn('Traceback', err)
        self.assertIn(f'interrupted: step 0 saved in {checkpoint}; continue with', err)
        self.assertIn(f'--resume --checkpoint {checkpoint}', err)
        with open(checkpoint) as f:
            self.assertEqual(json.load(f)['training']['step'], 0)

    @unittest.skipUnless(os.path.exists('/proc/self/task'), 'needs /proc to find the workers')
    def test_workers_end_with_their_parent(self):
        process = self.start(self.path('run.json'), '--steps', '5', '--batch-size', '3000',
                             '--workers', '2')
        workers, deadline = [], time.perf_counter() + 30
        while len(workers) < 2 and time.perf_counter() < deadline:  # the pool is starting
            with open(f'/proc/{process.pid}/task/{process.pid}/children') as f:
                workers = [int(pid) for pid in f.read().split()]
        self.assertEqual(len(workers), 2)
        process.kill()
        process.wait()

        def alive(pid):
            try:
                with open(f'/proc/{pid}/stat') as f:
                    return f.read().rsplit(')', 1)[1].split()[0] not in 'ZX'
            except FileNotFoundError:
                return False
        deadline = time.perf_counter() + 10
        while any(map(alive, workers)) and time.perf_counter() < deadline:
            time.sleep(0.1)
        self.assertFalse(any(map(alive, workers)))

    def test_a_closed_stderr_and_a_vanished_folder(self):
        checkpoint = self.path('run.json')
        process = self.start(checkpoint, '--steps', '100', '--workers', '1')
        process.stderr.close()  # as `train ... 2>&1 | head -1` does
        self.assertEqual(process.wait(timeout=60), 0)
        with open(checkpoint) as f:
            self.assertEqual(json.load(f)['training']['step'], 100)
        folder = self.path('gone')
        os.mkdir(folder)
        process = self.start(os.path.join(folder, 'run.json'), '--steps', '200', '--workers', '1')
        shutil.rmtree(folder)  # its lock file too
        _, err = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 1)
        self.assertNotIn('Traceback', err)
        self.assertRegex(err.strip().split('\n')[-1],
                         r'^error: .*run.json: could not save step \d+ .*; nothing was saved$')

    def test_one_writer_a_checkpoint(self):
        checkpoint, link = self.path('run.json'), self.path('link.json')
        os.symlink(checkpoint, link)
        first = self.start(checkpoint, '--steps', '3', '--batch-size', '2000', '--workers', '1')
        self.assertIn('training a', first.first_line)  # said once it holds the lock
        for name in (checkpoint, link):  # the same file by another name too
            second = run(*self.train_args(name, '--steps', '2'))
            self.assertEqual(second.returncode, 1, second.stderr)
            self.assertRegex(second.stderr, r'^error: .*: another run is training it now; wait '
                                            r'for it to end, or choose another --checkpoint\n$')
        first.kill()
        first.wait()
        lock = self.path('.run.json.lock')
        self.assertTrue(os.path.exists(lock))  # left behind by the killed run: it blocks nothing
        third = run(*self.train_args(checkpoint, '--steps', '2', '--workers', '1'))
        self.assertEqual(third.returncode, 0, third.stderr)
        self.assertFalse(os.path.exists(lock))
        with open(checkpoint) as f:
            self.assertEqual(json.load(f)['training']['step'], 2)

    @unittest.skipUnless(os.path.exists('/dev/full'), 'needs /dev/full')
    def test_results_that_cannot_be_written(self):
        commands = [['sample', '--checkpoint', self.model], ['forward', 'zoe'],
                    ['eval', '--checkpoint', self.model, '--data', self.data]]
        with open('/dev/full', 'w') as full:
            for args in commands:
                result = subprocess.run([sys.executable, SCRIPT, *args], stdout=full, text=True,
                                        stderr=subprocess.PIPE, timeout=120)
                self.assertEqual(result.returncode, 1)
                self.assertNotIn('Traceback', result.stderr)
                self.assertEqual(result.stderr.split('\n')[-2],  # after eval's progress
                                 'error: stdout cannot be written (No space left on device)')
        for args in commands[:1]:  # stdout closed
            result = subprocess.run(['sh', '-c', 'exec "$@" >&-', 'sh', sys.executable, SCRIPT,
                                     *args], capture_output=True, text=True, timeout=120)
            self.assertEqual((result.returncode, result.stderr), (1, 'error: stdout is closed, '
                             'so the results would be lost; give it a file\n'))
        ascii = dict(os.environ, PYTHONIOENCODING='ascii')
        result = subprocess.run([sys.executable, SCRIPT, *commands[2]], capture_output=True,
                                text=True, timeout=120, env=ascii)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r'names.txt: \d+\.\d+ \+/- \d+\.\d+ nats/name')
        result = subprocess.run([sys.executable, SCRIPT, 'forward', 'zoë'], capture_output=True,
                                text=True, timeout=120, env=ascii)
        self.assertEqual((result.returncode, result.stdout, result.stderr), (1, '', (
            "error: stdout cannot show '\\xeb' in its encoding, ascii; set PYTHONIOENCODING=utf-8\n"
        )))  # stderr escapes what it cannot show
        # stderr closed: training goes on, and nothing of it lands in another file
        result = subprocess.run(['sh', '-c', 'exec "$@" 2>&-', 'sh', sys.executable, SCRIPT,
                                 *self.train_args(self.path('quiet.json'), '--steps', '5',
                                                  '--workers', '2')],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual((result.returncode, result.stdout), (0, ''))
        with open(self.path('quiet.json')) as f:
            self.assertEqual(json.load(f)['training']['step'], 5)

    @unittest.skipUnless(sys.platform != 'win32', 'needs resource limits')
    def test_a_picture_that_cannot_be_written_after_the_work(self):
        import resource

        def small_files():  # a file may grow to 2,000 bytes: the picture cannot be written
            resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        picture = self.path('reverse.svg')
        result = subprocess.run([sys.executable, SCRIPT, 'sample', '--checkpoint', self.model,
                                 '--num', '3', '--svg', picture], preexec_fn=small_files,
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stdout.split('\n')), 4)  # the names came first
        self.assertEqual(result.stderr, f'error: --svg {picture}: could not be written (File too '
                                        'large); the rest of the work is done\n')
        self.assertEqual(os.listdir(self.folder.name), [])  # no half picture, no temporary
        folder = self.path('pictures')  # and a training curve whose folder vanished meanwhile
        os.mkdir(folder)
        process = self.start(self.path('run.json'), '--steps', '1', '--batch-size', '1000',
                             '--workers', '1', '--curve', os.path.join(folder, 'curve.svg'))
        shutil.rmtree(folder)
        _, err = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 1)
        self.assertNotIn('Traceback', err)
        self.assertRegex(err.split('\n')[-2], r'^error: --curve .*curve.svg: could not be '
                         r'written \(No such file or directory\); the rest of the work is done$')
        with open(self.path('run.json')) as f:  # the work was saved first
            self.assertEqual(json.load(f)['training']['step'], 1)

    def test_sample_streams_however_many(self):
        picture = self.path('reverse.svg')
        process = subprocess.Popen([sys.executable, SCRIPT, 'sample', '--checkpoint', self.model,
                                    '--num', '1000000000', '--svg', picture],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        names = [process.stdout.readline() for _ in range(3)]
        process.stdout.close()  # as `| head -3` does
        self.assertEqual(process.wait(timeout=60), 0)
        self.assertEqual(process.stderr.read(), '')
        process.stderr.close()
        self.assertTrue(all(name.endswith('\n') for name in names))
        # the reader left, but the picture of the first 8 names is made all the same
        group = ElementTree.parse(picture).getroot().find('{http://www.w3.org/2000/svg}g')
        self.assertEqual(len(group.findall('{http://www.w3.org/2000/svg}text')), 8)

    def test_bench_on_a_small_data_file(self):
        result = run('bench', '--checkpoint', self.model, '--data', self.data, '--repeats', '40')
        self.assertEqual(result.returncode, 0, result.stderr)
        # the mlp: 8 hidden units to and from each (position, token) of a 10-position block
        weights = 2 * 8 * 10 * (len(set(''.join(NAMES))) + 2)
        self.assertIn(f'bench: mlp with {weights:,} parameters, the weights in', result.stdout)
        ContractTest.assert_reads_and_graph(self, result.stdout)


def generated_text(size, seed=0):
    """Running text made up here: sentences of a few words, lines of a few sentences."""
    rng = random.Random(seed)
    words = ['the', 'cat', 'dog', 'sat', 'on', 'a', 'mat', 'log', 'and', 'ran', 'far', 'away']
    text = ''
    while len(text) < size:
        text += ' '.join(rng.choice(words) for _ in range(rng.randint(3, 7))) + '.'
        text += '\n' if rng.random() < 0.3 else ' '
    return text[:size]


class TextTest(unittest.TestCase):
    """Running text through the command line: windows, the held-out end, writing block after
    block, eval's counting, and bad input."""

    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        cls.text = generated_text(1000)
        cls.data = os.path.join(cls.folder.name, 'story.txt')
        with open(cls.data, 'w') as f:
            f.write(cls.text.replace('\n', '\r\n'))  # line ends are read as \n
        cls.models = {kind: os.path.join(cls.folder.name, f'{kind}.json')
                      for kind in ('diffusion', 'gpt')}
        cls.trained = run_all([['train', '--text', '--data', cls.data, '--block-size', '16',
                                '--steps', '20', '--batch-size', '4', '--model', kind,
                                '--checkpoint', path, '--workers', '1', '--n-embd', '8',
                                '--n-head', '2']
                               for kind, path in cls.models.items()])

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_windows_and_the_held_out_end(self):
        for result in self.trained:
            self.assertEqual(result.returncode, 0, result.stderr)
            # 1,000 characters: the last tenth, 100, held out as 6 whole windows of 16
            self.assertIn('on 900 characters (6 windows held out)', result.stderr)
        with open(self.models['diffusion']) as f:
            doc = json.load(f)
        self.assertEqual(doc['variant'], 'text')
        self.assertNotIn('lengths', doc)
        self.assertIn('\n', doc['chars'])  # newlines are text
        self.assertNotIn('\r', doc['chars'])

    def test_eval_counts_every_held_out_character_once(self):
        for kind, title in (('diffusion', 'NELBO'), ('gpt', r'NLL \(GPT, exact\)')):
            result = run('eval', '--checkpoint', self.models[kind], '--workers', '1')
            self.assertEqual(result.returncode, 0, result.stderr)
            lines = result.stdout.strip().split('\n')
            self.assertRegex(lines[0], r'story.txt held-out end: [\d.]+ .* nats/window, ')
            found = re.search(title + r' ([\d.]+) nats/window  ([\d.]+) bits/char  \(6 windows\)',
                              lines[1])
            self.assertTrue(found, lines[1])
            nats, bits = map(float, found.groups())
            self.assertAlmostEqual(bits, nats / 16 / math.log(2), places=2)  # 16 a window
            self.assertRegex(lines[2], r'^an add-one bigram counted on the training text: '
                                       r'[\d.]+ bits/char$')

    def test_writing_block_after_block(self):
        vocabulary = set(self.text)
        for kind in ('diffusion', 'gpt'):
            result = run('sample', '--checkpoint', self.models[kind], '--chars', '37',
                         '--prompt', 'the cat ', '--trace', '--steps', '4')
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertTrue(result.stdout.startswith('the cat '))
            written = result.stdout[len('the cat '):-1]
            self.assertEqual(len(written), 37)  # exactly as many, each a character of the text
            self.assertTrue(set(written) <= vocabulary)
            self.assertTrue(result.stdout.endswith('\n'))
            # every step of every block keeps what was written before it in view
            so_far = 'the cat '
            for block in range(1, 100):
                steps = re.findall(rf"block {block}, step +\d+ .*  '(.*)'\n", result.stderr)
                if not steps:
                    break
                final = steps[-1].encode().decode('unicode_escape')
                kept = min(len(so_far), 15 if kind == 'gpt' else 12)  # in view: 3/4, a GPT all
                for shown in steps:
                    shown = shown.encode().decode('unicode_escape')
                    self.assertEqual(shown[:kept], so_far[len(so_far) - kept:])
                    self.assertNotIn('_', shown[:kept])
                so_far += final[kept:]
            self.assertEqual(so_far, result.stdout[:-1])
            again = run('sample', '--checkpoint', self.models[kind], '--chars', '37',
                        '--prompt', 'the cat ', '--steps', '4')
            self.assertEqual(again.stdout, result.stdout)  # the same seed, the same text

    def test_bad_text_input(self):
        empty, one = (os.path.join(self.folder.name, name) for name in ('empty.txt', 'one.txt'))
        for path, content in ((empty, ''), (one, 'a')):
            with open(path, 'w') as f:
                f.write(content)
        diffusion, names_model = self.models['diffusion'], os.path.join(self.folder.name, 'n.json')
        with open(os.path.join(self.folder.name, 'names.txt'), 'w') as f:
            f.write('\n'.join(NAMES) + '\n')
        cases = [(['train', '--text', '--data', empty, '--checkpoint', 'x.json'],
                  'has 0 characters; running text needs at least 64', 1),
                 (['train', '--text', '--data', one, '--checkpoint', 'x.json'],
                  'has 1 characters; running text needs at least 64', 1),
                 (['sample', '--checkpoint', diffusion, '--prompt', 'the Ωmega'],
                  "--prompt: 'Ω' is not in the vocabulary", 1),
                 (['sample', '--checkpoint', diffusion, '--chars', '0'],
                  '--chars: 0 is below the minimum, 1', 2),
                 (['sample', '--checkpoint', diffusion, '--chars', '-5'], '--chars', 2),
                 (['sample', '--checkpoint', diffusion, '--num', '3'],
                  '--num: means nothing for running text', 1),
                 (['sample', '--checkpoint', diffusion, '--pattern', 'ka*'],
                  '--pattern: means nothing for running text', 1),
                 (['sample', '--checkpoint', diffusion, '--stats'],
                  '--stats: means nothing for running text', 1),
                 (['train', '--text', '--padding', '--data', self.data, '--checkpoint', 'x.json'],
                  '--padding: running text has no ends', 1),
                 (['train', '--data', 'names.txt', '--checkpoint', names_model, '--steps', '2'],
                  None, 0)]
        for (args, message, status), result in zip(cases, run_all([c[0] for c in cases],
                                                                  cwd=self.folder.name)):
            with self.subTest(args=args):
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertNotIn('Traceback', result.stderr)
                if message:
                    self.assertEqual(result.stderr.count('\n'), 1, result.stderr)
                    self.assertIn(message, result.stderr)
                    self.assertEqual(result.stdout, '')
        for flag in ('--chars', '--prompt'):
            result = run('sample', '--checkpoint', names_model, flag, '5')
            self.assertEqual(result.returncode, 1)
            self.assertIn(f'{flag}: ', result.stderr)
            self.assertIn('is a model of names; --num says how many', result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.folder.name, 'x.json')))


if __name__ == '__main__':
    unittest.main()


class SamplersTest(Folder):
    """The loop, --stats' figures and the frontier, through the command line."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.text = os.path.join(cls.shared.name, 'story.txt')
        with open(cls.text, 'w') as f:
            f.write(generated_text(600))
        cls.kinds = {kind: os.path.join(cls.shared.name, f'{kind}.json')
                     for kind in ('gpt', 'padded', 'text')}
        flags = {'gpt': ['--model', 'gpt'], 'padded': ['--padding', '--denoiser', 'mlp'],
                 'text': ['--text', '--data', cls.text, '--block-size', '16', '--n-embd', '8',
                          '--n-head', '2']}
        for result in run_all([['train', '--data', cls.data, '--steps', '8', '--batch-size', '4',
                                '--workers', '1', '--checkpoint', path, *flags[kind]]
                               for kind, path in cls.kinds.items()]):
            assert result.returncode == 0, result.stderr

    def test_the_loop_and_where_it_means_nothing(self):
        sample = ['sample', '--checkpoint', self.model, '--num', '4', '--trace', '--pattern',
                  'e' + '_' * 5, '--steps', '64', '--loop-passes', '0']
        plain, looped = run_all([sample, sample + ['--loop-passes', '3', '--loop-at', '2',
                                                   '--loop-remask', '2']])
        for result in (plain, looped):
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertTrue(all(re.fullmatch('e[a-z]{5}', n) for n in result.stdout.split()))
        # five letters to fill: five steps on the schedule, and the loop's three passes
        self.assertEqual(plain.stderr.count('\n  step'), 4 * 5)
        self.assertEqual(looped.stderr.count('\n  step'), 4 * (5 + 3))
        for line in looped.stderr.split('\n'):  # the pattern's letter is never re-masked
            self.assertNotRegex(line, r'step .*\s_[a-z_]{5}\.$')
        sample = ['sample', '--num', '2', '--checkpoint']
        cases = [(sample + [self.kinds['gpt'], '--loop-passes', '2'], '--loop-passes: a GPT '
                  'draws every position in order'),
                 (sample + [self.model, '--order', 'left-to-right', '--loop-at', '1'],
                  '--loop-at: --order left-to-right draws every position'),
                 (sample + [self.kinds['padded'], '--length', 'along', '--loop-remask', '2'],
                  '--loop-remask: the loop re-masks the letters of a name whose end is placed '
                  'first; --length along'),
                 (['sample', '--checkpoint', self.kinds['text'], '--loop-passes', '1'],
                  '--loop-passes: means nothing for running text'),
                 (sample + [self.model, '--loop-remask', '0'], '--loop-remask: 0 is below the '
                  'minimum, 1')]
        for (args, message), result in zip(cases, run_all([args for args, _ in cases])):
            self.assertNotEqual(result.returncode, 0)
            self.assertEqual(result.stderr.count('\n'), 1, result.stderr)
            self.assertIn(message, result.stderr)
        ok = run(*sample, self.kinds['padded'], '--loop-passes', '2', '--loop-at', '3')
        self.assertEqual(ok.returncode, 0, ok.stderr)  # padded, its end drawn first: a loop

    def test_stats_count_what_was_invented_and_what_remembered(self):
        result = run('sample', '--checkpoint', self.model, '--num', '60', '--stats',
                     '--score-with', self.kinds['gpt'], '--workers', '2')
        self.assertEqual(result.returncode, 0, result.stderr)
        new = float(re.search(r'60 names: ([\d.]+)% new', result.stderr).group(1))
        counted = int(re.search(r'samples [\d.]+ nats/name; the (\d+) new ones [\d.]+ '
                                r'nats/name', result.stderr).group(1))
        self.assertEqual(counted, round(new * 60 / 100))
        self.assertRegex(result.stderr, r'\nmemorisation: (too few hits to tell \()?\d+ of the '
                                        r'3\d training names came out, \d+ of the 3 held-out')
        self.assertRegex(result.stderr, r'\nforward passes a name: \d+\.\d\d\n')

    def test_the_frontier(self):
        picture = self.path('frontier.svg')
        result = run('frontier', '--checkpoint', self.model, '--score-with', self.kinds['gpt'],
                     '--num', '12', '--seeds', '0', '1', '--temperatures', '1', '2', '--steps',
                     '64', '4', '--loop', '1,2,1', '--svg', picture, '--workers', '2')
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.strip().split('\n')
        self.assertEqual(len(lines), 2 * 2 * 2)  # steps, loop or none, temperatures
        for line in lines:
            self.assertRegex(line, r'^.*model.json, (64|4) steps, (no loop|loop 1,2,1), T [12]: '
                                   r'[\d.]+% new, [\d.]+% unique, new names [\d.]+ nats, '
                                   r'[\d.]+ forward passes a name$')
        root = ElementTree.parse(picture).getroot()
        lines = root.findall('{http://www.w3.org/2000/svg}polyline')
        self.assertEqual([len(line.get('points').split()) for line in lines], [2] * 4)
        for args, flag in ((['--checkpoint', self.kinds['text']], '--checkpoint'),
                           (['--score-with', self.kinds['text']], '--score-with')):
            refused = run('frontier', '--checkpoint', self.model, *args, '--num', '2')
            self.assertEqual(refused.returncode, 1)
            self.assertRegex(refused.stderr, f'^error: {flag} .*text.json: is a model of running '
                                             'text; give a model of names\n$')


class NothingLostTest(Folder):
    """Documents taken for outputs, versions, signals to whole process groups, resource
    limits, models of the wrong kind, misleading messages, litter: one clear line and every
    file as it was, or the right behaviour."""

    def snapshot(self, path):
        with open(path, 'rb') as f:
            return f.read()

    def train(self, checkpoint, *more, data=None):
        return ['train', '--data', data or self.data, '--denoiser', 'mlp', '--batch-size', '4',
                '--checkpoint', checkpoint, '--workers', '1', *more]

    def refused(self, result, message, status=1):
        self.assertEqual(result.returncode, status, result.stderr)
        self.assertNotIn('Traceback', result.stderr)
        self.assertEqual(result.stderr.count('\n'), 1, result.stderr)
        self.assertRegex(result.stderr, message)

    def test_only_the_labs_own_files_are_replaced(self):
        package = self.write('package.json', '{"name": "my-app"}\n')
        other = self.write('other.json', '{"format": "another tool"}\n')
        page = self.write('page.svg', '<!DOCTYPE html><html><body>my page</body></html>\n')
        svg = self.write('drawn.svg', '<svg xmlns="http://www.w3.org/2000/svg"></svg>\n')
        documents = [package, other, page, svg]
        before = [self.snapshot(path) for path in documents]
        lock = self.write('.run.json.lock', 'my notes, by a name the lock uses\n')
        runs = [self.train(package, '--steps', '2'), self.train(other, '--steps', '2'),
                self.train(self.path('run.json'), '--steps', '2', '--curve', page),
                ['sample', '--checkpoint', self.model, '--svg', svg],
                self.train(self.path('run.json'), '--steps', '2')]
        results = run_all(runs[:4]) + [run(*runs[4])]  # (the last writes run.json too)
        for result, what in zip(results[:4], ('checkpoint', 'checkpoint', 'picture', 'picture')):
            self.refused(result, f"holds something other than a {what} of this lab's")
        self.assertEqual([self.snapshot(path) for path in documents], before)
        self.assertEqual(results[4].returncode, 0, results[4].stderr)
        self.assertEqual(self.snapshot(lock), b'my notes, by a name the lock uses\n')
        for _ in range(2):  # a picture the lab drew is the lab's to replace
            drawn = run('sample', '--checkpoint', self.model, '--svg', self.path('mine.svg'))
            self.assertEqual(drawn.returncode, 0, drawn.stderr)

    def test_versions_are_read(self):
        with open(self.model) as f:
            good = json.load(f)
        cases = []
        for version in (0, 4, 99, '3', [3], None):
            doc = dict(good, version=version)
            if version is None:
                del doc['version']
            path = self.write(f'v{len(cases)}.json', json.dumps(doc))
            found = f'is of version {version!r}' if version is not None else 'has no version'
            cases.append((['sample', '--checkpoint', path], re.escape(
                f'{path}: {found}; this build reads checkpoints of versions 1 to 3')))
        length_first = run('train', '--data', self.data, '--steps', '2', '--checkpoint',
                           self.path('lf.json'), '--workers', '1', '--n-embd', '8', '--n-head',
                           '2', '--n-layer', '1')
        self.assertEqual(length_first.returncode, 0, length_first.stderr)
        with open(self.path('lf.json')) as f:
            doc = json.load(f)
        del doc['lengths']
        cases.append((['sample', '--checkpoint', self.write('no-lengths.json', json.dumps(doc))],
                      '"lengths" must be'))
        doc.update(version=2, config=dict(doc['config'], model='diffusion', text=False))
        del doc['variant']
        cases.append((['sample', '--checkpoint', self.write('old.json', json.dumps(doc))],
                      '"lengths" is missing; a version-2 model that draws its length needs them'))
        cases.append((['train', '--resume', '--data', self.data, '--checkpoint', cases[2][0][2],
                       '--steps', '80'], 'is of version 99; this build reads'))
        before = {args[2] if args[0] == 'sample' else args[5]: None for args, _ in cases}
        before = {path: self.snapshot(path) for path in before}
        for (args, message), result in zip(cases, run_all([args for args, _ in cases])):
            self.refused(result, message)
        self.assertEqual({path: self.snapshot(path) for path in before}, before)

    def test_weights_no_checkpoint_can_hold_stop_training(self):
        checkpoint = self.path('run.json')
        shutil.copy(self.model, checkpoint)
        before = self.snapshot(checkpoint)
        result = run('train', '--data', self.data, '--lr', '2e6', '--steps', '1',
                     '--checkpoint', checkpoint, '--workers', '1')
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr.split('\n')[-2], r'^error: training diverged at step 1 '
                         r'\(weights past 1e6, more than a checkpoint holds\); .* is untouched')
        self.assertEqual(self.snapshot(checkpoint), before)

    def group(self, args):
        """A command started in a process group of its own, once its workers are running."""
        process = subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.addCleanup(ReliabilityTest.end, process)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and os.path.exists(f'/proc/{process.pid}'):
            with open(f'/proc/{process.pid}/task/{process.pid}/children') as f:
                if len(f.read().split()) == 2:
                    break
        return process

    @unittest.skipUnless(os.path.exists('/proc/self/task'), 'needs /proc to find the workers')
    def test_signals_to_the_whole_process_group(self):
        checkpoint = self.path('run.json')
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C: the group too
            process = self.group(self.train(checkpoint, '--steps', '5', '--batch-size', '3000',
                                            '--workers', '2'))
            os.killpg(process.pid, number)  # the workers too, as timeout and a closed terminal
            _, err = process.communicate(timeout=60)
            self.assertEqual(process.returncode, 128 + number, err)
            self.assertRegex(err.split('\n')[-2], f'^interrupted: step 0 saved in {checkpoint}; '
                                                  'continue with ".*--resume')
            self.assertFalse(os.path.exists(self.path('.run.json.lock')))  # the lock released
        many = self.write('many.txt', '\n'.join(NAMES * 100) + '\n')
        for args in (['sample', '--checkpoint', self.model, '--num', '100000000'],
                     ['eval', '--checkpoint', self.model, '--data', many]):
            process = self.group(args + ['--workers', '2'])
            os.killpg(process.pid, signal.SIGTERM)
            _, err = process.communicate(timeout=60)
            self.assertEqual(process.returncode, 128 + signal.SIGTERM, err)
            self.assertEqual(err.split('\n')[-2:], ['interrupted', ''])
            self.assertNotIn('Traceback', err)

    @unittest.skipUnless(sys.platform != 'win32', 'needs resource limits')
    def test_resource_limits(self):
        import resource

        def files(n):
            return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

        def limited(args, limit):
            return subprocess.run([sys.executable, SCRIPT, *args], preexec_fn=limit,
                                  capture_output=True, text=True, timeout=120)
        self.refused(limited(['sample', '--checkpoint', self.model, '--workers', '2'], files(8)),
                     r'^error: cannot start 2 worker processes \(Too many open files\); try '
                     '--workers 1\n$')
        # 36 names: a few shares, so a few workers, however many are asked for
        result = limited(['eval', '--checkpoint', self.model, '--data', self.data, '--workers',
                          '1024'], files(64))
        self.assertEqual(result.returncode, 0, result.stderr)
        if sys.implementation.name != 'cpython':
            return
        longest = self.write('long.txt', '\n'.join(''.join(random.Random(i).choice('abc') for _
                                                           in range(120)) for i in range(20)))
        result = limited(['train', '--data', longest, '--steps', '3', '--checkpoint',
                          self.path('big.json'), '--n-embd', '64', '--n-head', '8', '--n-layer',
                          '3', '--batch-size', '2', '--workers', '1'],
                         lambda: resource.setrlimit(resource.RLIMIT_AS, (400 * 2**20,) * 2))
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertNotIn('Traceback', result.stderr)
        self.assertRegex(result.stderr.split('\n')[-2], r'^error: out of memory at step 1; step '
                                                        r'0 saved in .*big.json; continue with')
        with open(self.path('big.json')) as f:
            self.assertEqual(json.load(f)['training']['step'], 0)

    def test_the_wrong_kind_of_model_and_misleading_messages(self):
        text = self.write('story.txt', generated_text(400))
        text_model = self.path('text.json')
        trained = run('train', '--text', '--data', text, '--steps', '2', '--block-size', '16',
                      '--checkpoint', text_model, '--workers', '1', '--n-embd', '8', '--n-head',
                      '2')
        self.assertEqual(trained.returncode, 0, trained.stderr)
        with open(self.model) as f:
            doc = json.load(f)
        doc.update(version=2, config=dict(doc['config'], model='diffusion', text='true'))
        del doc['variant']
        string_text = self.write('v2.json', json.dumps(doc))
        feed = self.write('feed.txt', 'one\ntwo\nthree\x0cfour\n' * 20)
        sample = ['sample', '--checkpoint', self.model, '--stats']
        cases = [(sample + ['--score-with', text_model], f'^error: --score-with {text_model}: '
                  'is a model of running text; give a model of names\n$'),
                 (sample[:3] + ['--animate', '--compare', text_model],
                  f'^error: --compare {text_model}: is a model of running text'),
                 (['eval', '--checkpoint', self.model, '--context', '3'], '^error: --context: '
                  'scores what follows the start of a window of running text; .* is a model '
                  'of names\n$'),
                 (['train', '--resume', '--text', '--data', text, '--checkpoint', self.model,
                   '--steps', '80'], "^error: --text: a resumed run keeps its checkpoint's kind "
                  'of model \\(a diffusion mlp on names\\)'),
                 (['sample', '--checkpoint', string_text], "config text = 'true'"),
                 (['train', '--text', '--data', feed, '--checkpoint', self.path('f.json')],
                  'feed.txt, line 3: holds a control character, U\\+000C, not text; remove it')]
        for (args, message), result in zip(cases, run_all([args for args, _ in cases])):
            self.refused(result, message)

    @unittest.skipUnless(hasattr(os, 'openpty'), 'needs a pseudo-terminal')
    def test_running_text_animates_in_place(self):
        text = self.write('story.txt', generated_text(400))
        model = self.path('text.json')
        trained = run('train', '--text', '--data', text, '--steps', '2', '--block-size', '16',
                      '--checkpoint', model, '--workers', '1', '--n-embd', '8', '--n-head', '2')
        self.assertEqual(trained.returncode, 0, trained.stderr)
        status, out, drawn = on_a_terminal('sample', '--checkpoint', model, '--chars', '12',
                                           '--prompt', 'the cat.\nthe ', '--animate',
                                           '--fps', '1000', env={'NO_COLOR': '1'})
        self.assertEqual(status, 0, drawn)
        self.assertTrue(out.startswith('the cat.\nthe '))
        self.assertIn('⏎'.encode(), drawn)  # the window's newline, drawn on its one line
        ups = re.findall(rb'\x1b\[(\d+)A', drawn)
        self.assertTrue(ups)
        self.assertEqual(set(ups), {b'1'})  # each frame one line up: nothing piles up
        # names side by side on a terminal 11 columns wide: each row of 10 + 4 + 10 (the block
        # holds 10) wraps onto 3 lines, so a block of 2 rows is redrawn from 6 lines up
        status, out, drawn = on_a_terminal('sample', '--checkpoint', self.model, '--num', '2',
                                           '--animate', '--compare', self.model, '--fps',
                                           '1000', env={'COLUMNS': '11', 'NO_COLOR': '1'})
        self.assertEqual(status, 0, drawn)
        self.assertEqual(set(re.findall(rb'\x1b\[(\d+)A', drawn)), {b'6'})

    def test_a_killed_save_leaves_no_litter_for_long(self):
        stale = self.write('.run.json.k1ll_9ab.tmp', '{"half a checkpoint')  # as kill -9 left
        mine = self.write('.run.json.notes.tmp', 'not the lab\'s: a name of my own')
        result = run(*self.train(self.path('run.json'), '--steps', '2'))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(mine))
        self.assertEqual(sorted(os.listdir(self.folder.name)),
                         ['.run.json.notes.tmp', 'run.json'])
