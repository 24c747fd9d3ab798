"""The lab in lab/: reading data files, processes, checkpoints, training with progress,
validation and saving, reports and pictures."""

import contextlib
import dataclasses
import io
import json
import math
import os
import random
import re
import sys
import tempfile
import unittest
from unittest import mock
import xml.etree.ElementTree as ET

import microdiffusion as md
import variants
from lab import checkpoint, data, reports, terminal, training, workers
from lab.pictures import curve_chart, curve_svg
from lab.settings import Validation
from variants.mlp import MLPConfig

from . import SHORT_NAMES, smaller, tiny


class DataTest(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)

    def write(self, content, mode='w'):
        path = os.path.join(self.folder.name, 'names.txt')
        with open(path, mode) as f:
            f.write(content)
        return path

    def test_traces_draw_mask_and_pad_as_marks(self):
        tok = md.Tokenizer.from_names(['zoe', 'ana', 'éva'])
        self.assertEqual(terminal.show([0, tok.MASK, tok.PAD], tok), 'a_.')
        odd = md.Tokenizer.from_names(['a_b', 'c.d'])  # the data has the usual marks
        self.assertEqual(terminal.show([0, odd.MASK, odd.PAD], odd), '.▒·')

    def test_load_strips_and_skips_blank_lines(self):
        path = self.write('  emma \n\n\t\nzoë\r\no\'neil\n')
        self.assertEqual(data.read_names(path, 16), ['emma', 'zoë', "o'neil"])
        self.assertEqual(data.read_names(path, 16), md.load_names(path))  # one reader

    def test_load_refuses_bad_files(self):
        cases = [(os.path.join(self.folder.name, 'missing.txt'), 'no such file'),
                 (self.folder.name, 'folder'),
                 (self.write(''), 'no names'),
                 (self.write('\n  \n\n'), 'no names')]
        for path, message in cases:
            with self.assertRaisesRegex(terminal.UserError, message):
                data.read_names(path, 16)
        path = self.write(b'emma\nz\xffe\n', 'wb')
        with self.assertRaisesRegex(terminal.UserError, 'line 2: is not UTF-8'):
            data.read_names(path, 16)
        path = self.write('emma\n' + 'a' * 17 + '\n')
        with self.assertRaisesRegex(terminal.UserError, 'line 2: .* has 17 characters'):
            data.read_names(path, 16)

    def test_line_endings_and_byte_order_marks(self):
        path = self.write(b'\xef\xbb\xbfemma\rzoe\r\nava\n\xef\xbb\xbfmia\r', 'wb')
        self.assertEqual(data.read_names(path, 16), ['emma', 'zoe', 'ava', 'mia'])
        self.assertEqual(md.load_names(path), ['emma', 'zoe', 'ava', 'mia'])  # alike
        path = self.write(b'emma\r' + b'x' * 17 + b'\r', 'wb')
        with self.assertRaisesRegex(terminal.UserError, 'line 2: .* has 17 characters'):
            data.read_names(path, 16)

    def test_split_is_fixed_and_ignores_order(self):
        names = [f'name{i}' for i in range(300)]
        cfg = md.Config()
        train, held = data.split_data(names, md.Model, cfg, 1000)
        self.assertEqual(len(held), 30)  # at most a tenth
        self.assertFalse(set(train) & set(held))
        self.assertEqual(sorted(train + held), sorted(names))
        shuffled = list(names)
        random.Random(5).shuffle(shuffled)
        self.assertEqual(data.split_data(shuffled, md.Model, cfg, 1000)[1], held)
        self.assertEqual(len(data.split_data(names, md.Model, cfg, 7)[1]), 7)


class TextDataTest(unittest.TestCase):
    """Running text: read whole, its end held out in windows, the bigram it is measured by."""

    def test_read_split_and_bigram(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'text.txt')
            with open(path, 'wb') as f:
                f.write(b'\xef\xbb\xbfab\r\nba\rab\tb')
            self.assertEqual(data.read_text(path), 'ab\nba\nab\tb')
            with open(path, 'wb') as f:
                f.write('abc'.encode('utf-16-le'))  # NULs: not UTF-8 text
            with self.assertRaisesRegex(terminal.UserError, r'line 1: .*\(is it UTF-16\?\)'):
                data.read_text(path)
            with open(path, 'w') as f:
                f.write('one\ntwo\nthree\x0cfour\n')  # a form feed: what it is, and where
            with self.assertRaisesRegex(terminal.UserError, 'line 3: holds a control '
                                                            'character, U[+]000C, not text'):
                data.read_text(path)
        cfg = md.Config(block_size=4)
        text = 'abcdefghijklmnopqrstuvwxyz' * 2  # 52 characters: the last 5 held out
        trained, held_out = data.split_data(text, variants.Text, cfg, 1000)
        self.assertEqual(trained, text[:47])
        self.assertEqual(held_out, [text[47:51]])  # whole windows only
        trained, held_out = data.split_data(text * 4, variants.Text, cfg, 1000)  # 208: 20 held
        self.assertEqual((len(trained), held_out), (188, data.windows((text * 4)[188:], 4)))
        self.assertEqual(len(held_out), 5)
        # trained on 'ab': after a, b once in 1; after b, nothing. Two characters, add-one:
        # the held-out 'bab' (its first b after the training text's last b) costs
        # p(b|b) = 1/2, p(a|b) = 1/2, p(b|a) = 2/3
        bits = reports.bigram_bits('ab', ['ba', 'b'])
        self.assertAlmostEqual(bits, -(2 * math.log2(1 / 2) + math.log2(2 / 3)) / 3)


class WorkerTest(unittest.TestCase):

    def test_a_worker_reuses_its_copy_of_the_parameters(self):
        cfg, tok = tiny()
        floats = md.as_floats(md.Model.new(cfg, tok).params)
        replica, values = workers._local(md.Model(cfg, tok, floats))
        floats['wpe'][2][1] += 0.5
        again, again_values = workers._local(md.Model(cfg, tok, floats))
        self.assertIs(again, replica)
        self.assertEqual(md.as_floats(again.params), floats)  # the numbers follow the floats
        self.assertEqual([v.data for v in again_values], [v.data for v in md.flatten(again.params)])
        model = md.Model.new(cfg, tok)  # a model of Values is used as it is
        self.assertIs(workers._local(model)[0], model)
        # another class with the same configuration and weights has a replica of its own
        gpt = workers._local(variants.GPT(cfg, tok, floats))[0]
        self.assertIs(type(gpt), variants.GPT)
        self.assertIsNot(gpt, replica)

    def test_never_more_processes_than_the_work(self):
        with workers.Workers(1) as alone:
            self.assertEqual(alone.processes, [])
        shares = workers.shares_of(list(range(30)))
        self.assertEqual([len(s) for s in shares], [3] * 10)
        self.assertEqual(len(workers.shares_of(list(range(3)))), 3)


class CheckpointTest(unittest.TestCase):

    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)
        self.path = os.path.join(self.folder.name, 'model.json')

    def test_round_trip_reproduces_logits_exactly(self):
        for name, kind in variants.VARIANTS.items():
            cfg, tok = tiny(variants.config_class(kind))
            model = kind.new(cfg, tok, ['emma', 'ava'])
            checkpoint.save_checkpoint(self.path, model)
            loaded, training_state = checkpoint.load_checkpoint(self.path)
            self.assertIsNone(training_state)
            self.assertIs(type(loaded), kind)
            self.assertEqual(loaded.tok.chars, tok.chars)
            self.assertEqual(loaded.lengths, model.lengths)
            tokens = [tok.MASK] * 5 + tok.encode('ava', 10)
            self.assertEqual(loaded.frozen().logits(tokens, [0, 2, 4]),
                             model.frozen().logits(tokens, [0, 2, 4]))
            with open(self.path) as f:
                doc = json.load(f)
            self.assertEqual((doc['format'], doc['version'], doc['variant']),
                             ('microdiffusion checkpoint', 3, name))
            self.assertEqual(doc['chars'], tok.chars)
            self.assertEqual(set(doc['config']), set(checkpoint.shape_fields(kind)))

    def test_a_failed_write_keeps_the_old_file(self):
        with open(self.path, 'w') as f:
            f.write('the previous checkpoint')
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        model.params['wpe'][0][0].data = float('nan')  # cannot be written as JSON
        with self.assertRaises(ValueError):
            checkpoint.save_checkpoint(self.path, model)
        with open(self.path) as f:
            self.assertEqual(f.read(), 'the previous checkpoint')
        self.assertEqual(os.listdir(self.folder.name), ['model.json'])  # no temporary left

    def good(self):
        cfg, tok = tiny()
        checkpoint.save_checkpoint(self.path, md.Model.new(cfg, tok, ['ab']))
        with open(self.path) as f:
            return json.load(f), md.Model.new(cfg, tok)

    def test_damaged_checkpoints_are_refused(self):
        good, model = self.good()

        def variant(change):
            doc = json.loads(json.dumps(good))
            change(doc)
            return json.dumps(doc)

        cases = [('{"not": "finished"', 'not JSON'),
                 ('[1, 2, 3]', 'not a valid'),
                 (variant(lambda d: d['params'].pop('wpe')), 'params'),
                 (variant(lambda d: d['params']['wte'].pop()), 'wte should be'),
                 (variant(lambda d: d['config'].update(n_embd=12)), 'should be'),
                 (variant(lambda d: d['config'].update(n_head=0)), 'n_head'),
                 (variant(lambda d: d['config'].update(n_head=5)), 'not a multiple of n_head 5'),
                 (variant(lambda d: d.update(chars=['a', 'a'])), 'chars'),
                 (variant(lambda d: d.update(variant='gpt-mlp')), '"variant" must be one of'),
                 (variant(lambda d: d.pop('lengths')), '"lengths" must be'),
                 (variant(lambda d: d.pop('format')), '"format" is'),
                 (json.dumps(good).replace(str(good['params']['wpe'][0][0]), 'NaN', 1),
                  'not a finite number')]
        for version in (0, 4, 99, '2', [3], None):
            cases.append((variant(lambda d: d.update(version=version)), re.escape(
                (f'is of version {version!r}' if version is not None else 'has no version') +
                '; this build reads checkpoints of versions 1 to 3')))
        cases.append((variant(lambda d: d.pop('version')), 'has no version; this build reads'))
        with_state = json.loads(json.dumps(good))
        n = len(md.flatten(model.params))
        with_state['training'] = {
            'step': 1, 'settings': {**dataclasses.asdict(model.cfg),
                                    **dataclasses.asdict(Validation())},
            'adam_t': 1, 'data_fingerprint': 'x', 'adam_m': [0.0] * n, 'adam_v': [0.0] * n}

        def training_doc(**settings):
            doc = json.loads(json.dumps(with_state))
            doc['training']['settings'].update(settings)
            return json.dumps(doc)
        cases += [(training_doc(t_min=-0.5), 't_min = -0.5 is out of range'),
                  (training_doc(beta2=1.5), 'beta2'), (training_doc(val_every=0), 'val_every'),
                  (training_doc(n_embd=8), 'settings disagree with "config"'),
                  (variant(lambda d: d['config'].update(n_layer=10_000_000)), 'n_layer'),
                  (variant(lambda d: d['config'].update(n_embd=1024, n_layer=64)),
                   'more than 200,000 parameters'),
                  ('{"a": ' + '1' * 5000 + '}', 'JSON'), ('[' * 100_000, 'not JSON'),
                  (json.dumps(good).replace(str(good['params']['wpe'][0][0]), '1e308', 1),
                   'at most 1e6')]
        for text, message in cases:
            with open(self.path, 'w') as f:
                f.write(text)
            with self.assertRaisesRegex(terminal.UserError, message):
                checkpoint.load_checkpoint(self.path, resuming=True)
        # the least another tool must write: format, version, variant, chars, config, params
        minimal = {'format': good['format'], 'version': 3, 'variant': 'padded',
                   'chars': ''.join(good['chars']), 'config': good['config'],
                   'params': good['params']}
        with open(self.path, 'w') as f:
            json.dump(minimal, f)
        loaded, state = checkpoint.load_checkpoint(self.path)
        self.assertIsNone(state)
        self.assertIs(type(loaded), variants.Padded)
        self.assertEqual(md.as_floats(loaded.params), good['params'])

    def test_older_versions_load_as_the_model_they_were(self):
        good, _ = self.good()
        mlp = dict(good['config'], mlp_hidden=8)
        v1 = {'format': good['format'], 'version': 1, 'chars': good['chars']}
        cases = [(dict(v1, config=dict(good['config'], model='gpt'), params=good['params']),
                  variants.GPT),
                 (dict(v1, config=good['config'], params=good['params']), variants.Padded),
                 (dict(v1, version=2, config=good['config'], params=good['params'],
                       lengths=good['lengths']), md.Model),
                 (dict(v1, version=2, config=dict(good['config'], text=True),
                       params=good['params']), variants.Text),
                 (dict(v1, version=2, config=dict(mlp, denoiser='mlp', model='diffusion'),
                       params=md.as_floats(variants.MLP.new(*tiny(MLPConfig)).params),
                       training={'settings': {'padding': True}}), variants.PaddedMLP)]
        for doc, kind in cases:
            with open(self.path, 'w') as f:
                json.dump(doc, f)
            self.assertIs(type(checkpoint.load_checkpoint(self.path)[0]), kind, doc['config'])
        # a version-2 model that draws its length, its "lengths" lost: damaged, not padded
        with open(self.path, 'w') as f:
            json.dump(dict(v1, version=2, config=good['config'], params=good['params'],
                           training={'settings': {'padding': False}}), f)
        with self.assertRaisesRegex(terminal.UserError, '"lengths" is missing'):
            checkpoint.load_checkpoint(self.path)


class TrainingTest(unittest.TestCase):

    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)
        self.path = os.path.join(self.folder.name, 'model.json')

    def run_training(self, cfg, tok, processes=1, state=None, stop_after=None, model=None,
                     validation=Validation(val_every=1000)):
        model = model or md.Model.new(cfg, tok)
        train, held = SHORT_NAMES[:24], SHORT_NAMES[24:]
        with workers.Workers(processes) as pool:
            training.run_training(model, train, held, data.fingerprint(train), self.path, pool,
                                  state, stop_after, validation=validation)
        return model

    def quiet(self):
        """Training reports progress on stderr; keep the test output clean."""
        return contextlib.redirect_stderr(io.StringIO())

    def test_the_lab_trains_exactly_as_the_lesson(self):
        # run_training adds processes, validation and saving around the lesson's train_step
        cfg, _ = smaller(steps=6, batch_size=3)
        names = SHORT_NAMES[:24]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            plain = md.train(cfg, names, log_every=3)
        self.assertEqual(out.getvalue().count('loss'), 2)
        for processes in (1, 2):
            trained = md.Model.new(cfg, md.Tokenizer.from_names(names), names)
            with self.quiet(), workers.Workers(processes) as pool:
                training.run_training(trained, names, names[:3], data.fingerprint(names),
                                      self.path, pool, validation=Validation(val_every=2))
            self.assertEqual(md.as_floats(trained.params), md.as_floats(plain.params))
        self.assertEqual(md.sample(plain, 3, seed=5), md.sample(trained, 3, seed=5))
        with workers.Workers(2) as pool:
            made = workers.sample_names(trained, 3, 5, md.Sampling(), pool)
            streamed = [name for name, *_ in made]
        self.assertEqual(streamed, md.sample(plain, 3, seed=5))

    def test_a_debugger_keeps_everything_in_one_process(self):
        tracer = sys.gettrace()
        self.addCleanup(sys.settrace, tracer)
        sys.settrace(None)
        with contextlib.redirect_stderr(io.StringIO()) as said:
            self.assertEqual(workers.Workers(2).n, 2)
        self.assertEqual(said.getvalue(), '')
        sys.settrace(lambda *args: None)
        with contextlib.redirect_stderr(io.StringIO()) as said:
            alone = workers.Workers(2).n
        sys.settrace(tracer)
        self.assertEqual(alone, 1)
        self.assertIn('a debugger is attached', said.getvalue())

    def test_in_one_process_the_lesson_computes_the_batch_itself(self):
        cfg, tok = smaller(steps=1, batch_size=2)
        seams = []
        real = md.train_step

        def spy(model, adam, names, step, gradients=None):
            seams.append(gradients)
            return real(model, adam, names, step, gradients)
        with mock.patch.object(md, 'train_step', spy), self.quiet():
            self.run_training(cfg, tok, processes=1)
            self.run_training(cfg, tok, processes=2)
        self.assertIsNone(seams[0])  # no gradient function: one crossing from lab to lesson
        self.assertTrue(callable(seams[1]))

    def test_resume_continues_exactly(self):
        cfg, tok = smaller(steps=12, batch_size=2)
        every5 = Validation(val_every=5)
        with self.quiet():
            straight = self.run_training(cfg, tok, validation=every5)
            _, whole = checkpoint.load_checkpoint(self.path)
            self.run_training(cfg, tok, stop_after=7, validation=every5)
            resumed, state = checkpoint.load_checkpoint(self.path)
            self.assertEqual(state['step'], 7)
            resumed.cfg = cfg
            self.run_training(cfg, tok, state=state, model=resumed, validation=every5)
        self.assertEqual(md.as_floats(resumed.params), md.as_floats(straight.params))
        _, final = checkpoint.load_checkpoint(self.path)
        self.assertEqual(final['step'], 12)
        # the history survives the resume: the same rows as the straight run's, but the seconds
        self.assertEqual([row[:4] for row in final['history']],
                         [row[:4] for row in whole['history']])
        self.assertEqual([row[0] for row in whole['history']], list(range(1, 13)))
        self.assertEqual([row[3] is not None for row in whole['history']],
                         [step in (5, 10, 12) for step in range(1, 13)])
        seconds = [row[4] for row in final['history']]
        self.assertEqual(seconds, sorted(seconds))
        svg = ET.fromstring(curve_svg(final['history']))
        line = svg.find('{http://www.w3.org/2000/svg}polyline').get('points').split()
        self.assertEqual(len(line), 12)
        self.assertEqual(len(svg.findall('{http://www.w3.org/2000/svg}circle')), 3)
        chart = curve_chart(final['history'])
        self.assertEqual(sum(line.count('o') for line in chart[:-1]), 3)

    def test_an_older_checkpoint_resumes_and_a_short_one_is_refused(self):
        cfg, tok = smaller(steps=6, batch_size=2)
        with self.quiet():
            straight = self.run_training(cfg, tok)
            self.run_training(cfg, tok, stop_after=3)
        with open(self.path) as f:
            doc = json.load(f)
        # as version 2 wrote it: the kind of model in "config" and in the settings, and
        # settings an older version had (temp_start, temp_end) that no longer shape training
        doc['version'] = 2
        doc['config'].update(model='diffusion', denoiser='transformer', mlp_hidden=8, text=False)
        doc['training']['settings'].update(temp_start=1.2, temp_end=0.3, model='diffusion',
                                           denoiser='transformer', mlp_hidden=8, padding=False,
                                           text=False)
        del doc['variant']
        with open(self.path, 'w') as f:
            json.dump(doc, f)
        resumed, state = checkpoint.load_checkpoint(self.path, resuming=True)
        self.assertIs(type(resumed), md.Model)
        self.assertEqual(set(state['settings']), {f.name for f in dataclasses.fields(md.Config)}
                         | {f.name for f in dataclasses.fields(Validation)})
        resumed.cfg = md.Config(**{f.name: state['settings'][f.name]
                                   for f in dataclasses.fields(md.Config)})
        with self.quiet():
            self.run_training(resumed.cfg, tok, state=state, model=resumed)
        self.assertEqual(md.as_floats(resumed.params), md.as_floats(straight.params))
        doc['training']['settings']['padding'] = True  # it says another kind of model
        with open(self.path, 'w') as f:
            json.dump(doc, f)
        with self.assertRaisesRegex(terminal.UserError, 'settings disagree with "config"'):
            checkpoint.load_checkpoint(self.path, resuming=True)
        doc['training']['settings']['padding'] = False
        del doc['training']['settings']['lr']
        with open(self.path, 'w') as f:
            json.dump(doc, f)
        with self.assertRaisesRegex(terminal.UserError, 'settings lack lr'):
            checkpoint.load_checkpoint(self.path, resuming=True)
        self.assertIsNotNone(checkpoint.load_checkpoint(self.path)[0])  # sample needs no more

    def test_workers_do_not_change_the_result(self):
        cfg, tok = smaller(steps=3, batch_size=3)
        with self.quiet():
            alone = self.run_training(cfg, tok, processes=1)
            shared = self.run_training(cfg, tok, processes=2)
        self.assertEqual(md.as_floats(shared.params), md.as_floats(alone.params))

    def test_divergence_stops_and_leaves_the_checkpoint(self):
        for lr in (1e100, 2e6):  # a loss that is no number; weights past what a file holds
            cfg, tok = smaller(steps=50, lr=lr)
            with open(self.path, 'w') as f:
                f.write('an earlier checkpoint')
            with self.quiet(), self.assertRaisesRegex(terminal.UserError,
                                                      'diverged at step 1 .* untouched'):
                self.run_training(cfg, tok)
            with open(self.path) as f:
                self.assertEqual(f.read(), 'an earlier checkpoint')

    def test_progress_on_a_pipe_shows_every_minute(self):
        # a million names at 5 a second: a tenth would take hours, so a line every minute
        clock = [0.0]
        with mock.patch.object(terminal.time, 'perf_counter', lambda: clock[0]), \
                contextlib.redirect_stderr(io.StringIO()) as said:
            progress = terminal.Progress(10**6, 'name')
            for done in range(50, 1001, 50):
                clock[0] += 10.0  # ten seconds a share of 50
                progress.update(done)
        self.assertEqual([line.split()[1] for line in said.getvalue().splitlines()],
                         ['300/1000000', '600/1000000', '900/1000000'])


class ReportTest(unittest.TestCase):

    def test_sample_report_counts_new_unique_and_lengths(self):
        train, held_out = ['ann', 'bob', 'cy', 'dave'], ['eve', 'flo']
        samples = ['ann', 'ann', 'eve', 'zed', 'zed', 'quinn', 'al', 'bob']
        lines = reports.sample_report(samples, train, held_out, 8, [6, 7, 6, 6, 5, 6, 6, 6])
        # new: eve, zed, zed, quinn, al (5 of 8); eve is held out; distinct: 6 of 8
        self.assertEqual(lines[0], '8 names: 62.5% new (not in the training data; 1 of them '
                                   'are held-out real names), 75.0% unique')
        self.assertEqual(lines[1], 'memorisation: too few hits to tell (2 of the 4 training '
                                   'names came out, 1 of the 2 held-out ones)')
        self.assertEqual(lines.pop(2), 'forward passes a name: 6.00')
        lines.pop(1)
        # lengths: samples 2: 1/8, 3: 6/8, 5: 1/8; data (6 names, 3.00) 2: 1/6, 3: 4/6, 4: 1/6
        tv = (abs(1 / 8 - 1 / 6) + abs(6 / 8 - 4 / 6) + 1 / 6 + 1 / 8) / 2
        self.assertEqual(lines[1], f'mean length 3.12 (data 3.00), length histogram total '
                                   f'variation {tv:.3f}')
        self.assertEqual(lines[3:], ['     2   16.7%   12.5%   ########            |######',
                                     '     3   66.7%   75.0%   ' + '#' * 33 + '|' + '#' * 38,
                                     '     4   16.7%    0.0%   ########            |',
                                     '     5    0.0%   12.5%                       |######'])

    def test_memorisation_counts_distinct_names_per_name_of_each_set(self):
        train = [f't{i}' for i in range(1000)] + ['t0'] * 5  # distinct: 1,000
        held_out = [f'h{i}' for i in range(100)]
        # 40 distinct training names (4% of them), each twice; 10 held-out ones (10%)
        samples = [f't{i}' for i in range(40)] * 2 + [f'h{i}' for i in range(10)] + ['new'] * 7
        line = reports.memorisation(samples, set(train), set(held_out))
        self.assertEqual(line, 'memorisation: 0.40 (40 of the 1,000 training names came out, '
                               '10 of the 100 held-out ones; 1: as often as real names it never '
                               'saw)')
        copier = samples + [f't{i}' for i in range(40, 400)]  # 400 of 1,000: 40% against 10%
        self.assertIn('memorisation: 4.00 (400 of the 1,000', reports.memorisation(
            copier, set(train), set(held_out)))
        self.assertIn('too few hits to tell (40 of the 1,000 training names came out, 9 of',
                      reports.memorisation(samples[:80] + samples[81:], set(train),
                                           set(held_out)))

    def test_the_lab_marks_what_was_remembered(self):
        from lab.cli import marked
        header, lines = marked(['saila', 'rana', 'zed', 'eve', 'rana'], ['rana', 'saila', 'bo'],
                               ['eve', 'flo'])
        self.assertEqual(header, '5 names, 2 new')  # zed, and eve: real, but never trained on
        self.assertEqual(lines, ['saila  (trained on)', 'rana  (trained on)', 'zed',
                                 'eve  (held out)', 'rana  (trained on)'])


if __name__ == '__main__':
    unittest.main()
