"""The command line, run for real in a subprocess: its output contract and its bad-input errors."""

import json
import os
import re
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


class Folder(unittest.TestCase):
    """Each test gets a folder with a small names file and, made once per class, a checkpoint
    trained on it (the mlp denoiser: the command line is the same, and it trains fast)."""

    @classmethod
    def setUpClass(cls):
        cls.shared = tempfile.TemporaryDirectory()
        cls.data = os.path.join(cls.shared.name, 'names.txt')
        with open(cls.data, 'w') as f:
            f.write('\n'.join(NAMES) + '\n')
        cls.model = os.path.join(cls.shared.name, 'model.json')
        result = run('train', '--data', cls.data, '--steps', '40', '--denoiser', 'mlp',
                     '--checkpoint', cls.model, '--workers', '1')
        assert result.returncode == 0, result.stderr

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
        first = run('sample', '--checkpoint', self.model, '--num', '6', '--seed', '11').stdout
        again = run('sample', '--checkpoint', self.model, '--num', '6', '--seed', '11',
                    '--workers', '2').stdout
        other = run('sample', '--checkpoint', self.model, '--num', '6', '--seed', '12').stdout
        self.assertEqual(first, again)
        self.assertNotEqual(first, other)

    def test_same_seed_same_model(self):
        for workers in ('1', '2'):
            result = run('train', '--data', self.data, '--steps', '40', '--denoiser', 'mlp',
                         '--checkpoint', self.path(f'm{workers}.json'), '--workers', workers,
                         '--batch-size', '3')
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
                     '--pattern', '_' * 9)  # nine letters: no length to draw
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
        checkpoint = self.path('run.json')
        args = ['train', '--data', self.data, '--steps', '300', '--denoiser', 'mlp',
                '--checkpoint', checkpoint, '--workers', '1']
        process = subprocess.Popen([sys.executable, SCRIPT, *args], stderr=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        for line in process.stderr:  # the first progress line: training is under way
            if line.startswith('step '):
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 130, err)
        self.assertIn('interrupted: step', err)
        self.assertNotIn('Traceback', err)
        with open(checkpoint) as f:
            step = json.load(f)['training']['step']
        self.assertLess(0, step)
        self.assertLess(step, 300)
        resumed = run('train', '--resume', *args[1:])
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        straight = run('train', *args[1:-4], '--checkpoint', self.path('straight.json'),
                       '--workers', '1')
        self.assertEqual(straight.returncode, 0, straight.stderr)
        with open(checkpoint) as a, open(self.path('straight.json')) as b:
            self.assertEqual(json.load(a)['params'], json.load(b)['params'])

    def test_gpt_trains_evaluates_and_samples(self):
        gpt = self.path('gpt.json')
        result = run('train', '--model', 'gpt', '--data', self.data, '--steps', '8',
                     '--checkpoint', gpt, '--workers', '2')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('val NLL', result.stderr)
        result = run('eval', '--checkpoint', gpt, '--data', self.data)
        self.assertRegex(result.stdout.strip().split('\n')[-1],
                         r'^NLL \(GPT, exact\) \d+\.\d+ nats/name  \d+\.\d+ bits/char  '
                         r'\(36 names\)$')
        names = run('sample', '--checkpoint', gpt, '--num', '6', '--pattern', 'ja*').stdout.split()
        self.assertEqual(len(names), 6)
        self.assertTrue(all(n.startswith('ja') and len(n) < 16 for n in names), names)
        again = run('sample', '--checkpoint', gpt, '--num', '6', '--pattern', 'ja*', '--workers',
                    '1').stdout.split()
        self.assertEqual(again, names)
        # four letters: the 40-step model has not learned where names end, and the GPT can
        # only score names shorter than its block
        scored = run('sample', '--checkpoint', self.model, '--num', '4', '--stats', '--data',
                     self.data, '--score-with', gpt, '--pattern', '____')
        self.assertRegex(scored.stderr, r'scored by .*gpt.json: samples \d+\.\d+ nats/name.*; '
                                        r'held-out real names \d+\.\d+ nats/name')
        ordered = run('eval', '--checkpoint', self.model, '--data', self.data, '--order',
                      'left-to-right')
        self.assertRegex(ordered.stdout, r'NLL \(left to right, exact\) \d+\.\d+ nats/name')

    @unittest.skipIf(sys.version_info[:3] == (3, 13, 0),
                     "3.13.0's pdb reads the script's own options (--data ...) as its own")
    def test_a_breakpoint_stops_in_the_main_process(self):
        commands = ['b microdiffusion.diffusion_loss', 'c', 'p t > 0',
                    "p __import__('multiprocessing').current_process().name", 'q']
        result = subprocess.run(
            [sys.executable, '-m', 'pdb', SCRIPT, 'train', '--data', self.data, '--steps', '2',
             '--checkpoint', self.path('debugged.json'), '--workers', '2'],
            input='\n'.join(commands) + '\n', capture_output=True, text=True, timeout=120)
        self.assertIn('a debugger is attached: running in this one process', result.stderr)
        self.assertIn('-> ', result.stdout)  # pdb stopped, and answered in the main process:
        self.assertIn("True\n(Pdb) 'MainProcess'", result.stdout)

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

        def on_a_terminal(*more, env=None, interrupt=False):
            main, terminal = os.openpty()
            process = subprocess.Popen([sys.executable, SCRIPT, *sample, '--animate', *more],
                                       stdout=subprocess.PIPE, stderr=terminal, text=True,
                                       env=dict(os.environ, **(env or {})))
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
                if interrupt and drawn.count(b'\x1b[3A') == 2:
                    process.send_signal(signal.SIGINT)
                    interrupt = False
            os.close(main)
            out = process.stdout.read()
            process.stdout.close()
            return process.wait(timeout=60), out, drawn

        status, out, drawn = on_a_terminal('--fps', '1000', env={'NO_COLOR': ''})
        self.assertEqual((status, out), (0, plain))  # the same names as without the flag
        self.assertIn(b'\x1b[3A', drawn)              # the block is redrawn in place
        self.assertIn(b'\x1b[2;33m_', drawn)          # MASK in colour
        self.assertTrue(drawn.endswith(b'\x1b[0m\x1b[?25h'))  # and the cursor shown again
        status, out, drawn = on_a_terminal('--fps', '1000', env={'NO_COLOR': '1'})
        self.assertEqual(out, plain)
        self.assertNotIn(b'\x1b[2', drawn)            # plain marks
        self.assertIn(b'_', drawn)
        status, out, drawn = on_a_terminal('--fps', '20', '--compare', self.model, interrupt=True)
        self.assertEqual(status, 130)
        self.assertTrue(drawn.endswith(b'\x1b[0m\x1b[?25hinterrupted\r\n'), drawn[-40:])
        piped = run(*sample, '--animate')  # not a terminal: exactly as without the flag
        self.assertEqual((piped.stdout, piped.stderr), (plain, ''))

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
        self.assertIn('freshly initialised weights', result.stdout)
        self.assertEqual(result.returncode, 0, result.stderr)
        for label in ('training step', 'forward pass', 'sampled name', 'graph per training step'):
            self.assertRegex(result.stdout, label + r'.*: [\d,.]+ ')


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
        processes = [subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=self.folder.name)
                     for args, _, _ in runs]
        for (args, message, _), process in zip(runs, processes):
            out, err = process.communicate(timeout=120)
            with self.subTest(args=args):
                self.assert_refused(args, message, files, subprocess.CompletedProcess(
                    args, process.returncode, out, err), before)

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
        for bad in ('0', '-1', 'nan', 'inf', 'fast'):
            cases.append((self.train(self.data) + ['--lr', bad], '--lr'))
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
                   'must be a multiple of --n-head 5'),
                  (self.train(self.data) + ['--n-embd', '1024', '--n-layer', '64'],
                   'more than 200,000 parameters')]
        self.assert_all_refused([(args, message, self.data) for args, message in cases])

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
        return ['train', '--data', self.data, '--denoiser', 'mlp', '--checkpoint', checkpoint,
                *more]

    def start(self, checkpoint, *more):
        """A training run in the background, once its first line is out."""
        process = subprocess.Popen([sys.executable, SCRIPT, *self.train_args(checkpoint, *more)],
                                   stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        process.first_line = process.stderr.readline()
        return process

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

    def test_sample_streams_however_many(self):
        process = subprocess.Popen([sys.executable, SCRIPT, 'sample', '--checkpoint', self.model,
                                    '--num', '1000000000'], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        names = [process.stdout.readline() for _ in range(3)]
        process.stdout.close()  # as `| head -3` does
        self.assertEqual(process.wait(timeout=60), 0)
        self.assertNotIn('Traceback', process.stderr.read())
        process.stderr.close()
        self.assertTrue(all(name.endswith('\n') for name in names))

    def test_bench_on_a_small_data_file(self):
        result = run('bench', '--checkpoint', self.model, '--data', self.data, '--repeats', '40')
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('graph per training step', result.stdout)


if __name__ == '__main__':
    unittest.main()
