"""The lab in lab.py: reading data files, processes, checkpoints, training with progress,
validation and saving, and its pictures."""

import contextlib
import dataclasses
import io
import json
import math
import os
import random
import sys
import tempfile
import unittest
from unittest import mock
import xml.etree.ElementTree as ET

import lab
import microdiffusion as md

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
        self.assertEqual(lab.show([0, tok.MASK, tok.PAD], tok), 'a_.')
        odd = md.Tokenizer.from_names(['a_b', 'c.d'])  # the data has the usual marks
        self.assertEqual(lab.show([0, odd.MASK, odd.PAD], odd), '.▒·')

    def test_load_strips_and_skips_blank_lines(self):
        path = self.write('  emma \n\n\t\nzoë\r\no\'neil\n')
        self.assertEqual(lab.read_names(path, 16), ['emma', 'zoë', "o'neil"])

    def test_load_refuses_bad_files(self):
        cases = [(os.path.join(self.folder.name, 'missing.txt'), 'no such file'),
                 (self.folder.name, 'folder'),
                 (self.write(''), 'no names'),
                 (self.write('\n  \n\n'), 'no names')]
        for path, message in cases:
            with self.assertRaisesRegex(lab.UserError, message):
                lab.read_names(path, 16)
        path = self.write(b'emma\nz\xffe\n', 'wb')
        with self.assertRaisesRegex(lab.UserError, 'line 2: is not UTF-8'):
            lab.read_names(path, 16)
        path = self.write('emma\n' + 'a' * 17 + '\n')
        with self.assertRaisesRegex(lab.UserError, 'line 2: .* has 17 characters'):
            lab.read_names(path, 16)

    def test_line_endings_and_byte_order_marks(self):
        path = self.write(b'\xef\xbb\xbfemma\rzoe\r\nava\n\xef\xbb\xbfmia\r', 'wb')
        self.assertEqual(lab.read_names(path, 16), ['emma', 'zoe', 'ava', 'mia'])
        path = self.write(b'emma\r' + b'x' * 17 + b'\r', 'wb')
        with self.assertRaisesRegex(lab.UserError, 'line 2: .* has 17 characters'):
            lab.read_names(path, 16)

    def test_split_is_fixed_and_ignores_order(self):
        names = [f'name{i}' for i in range(300)]
        train, held = lab.split_names(names, 1000)
        self.assertEqual(len(held), 30)  # at most a tenth
        self.assertFalse(set(train) & set(held))
        self.assertEqual(sorted(train + held), sorted(names))
        shuffled = list(names)
        random.Random(5).shuffle(shuffled)
        self.assertEqual(sorted(lab.split_names(shuffled, 1000)[1]), sorted(held))
        self.assertEqual(len(lab.split_names(names, 7)[1]), 7)


class TextDataTest(unittest.TestCase):
    """Running text: read whole, its end held out in windows, the bigram it is measured by."""

    def test_read_split_and_bigram(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'text.txt')
            with open(path, 'wb') as f:
                f.write(b'\xef\xbb\xbfab\r\nba\rab\tb')
            self.assertEqual(lab.read_text(path), 'ab\nba\nab\tb')
            with open(path, 'wb') as f:
                f.write('abc'.encode('utf-16-le'))  # NULs: not UTF-8 text
            with self.assertRaisesRegex(lab.UserError, 'control character'):
                lab.read_text(path)
        cfg = md.Config(text=True, block_size=4)
        text = 'abcdefghijklmnopqrstuvwxyz' * 2  # 52 characters: the last 5 held out
        trained, held_out = lab.split_data(text, cfg)
        self.assertEqual(trained, text[:47])
        self.assertEqual(held_out, [text[47:51]])  # whole windows only
        trained, held_out = lab.split_data(text * 4, cfg)  # 208: 20 held out, 5 windows
        self.assertEqual((len(trained), held_out), (188, lab.windows((text * 4)[188:], 4)))
        self.assertEqual(len(held_out), 5)
        # trained on 'ab': after a, b once in 1; after b, nothing. Two characters, add-one:
        # the held-out 'bab' (its first b after the training text's last b) costs
        # p(b|b) = 1/2, p(a|b) = 1/2, p(b|a) = 2/3
        bits = lab.bigram_bits('ab', ['ba', 'b'])
        self.assertAlmostEqual(bits, -(2 * math.log2(1 / 2) + math.log2(2 / 3)) / 3)


class WorkerTest(unittest.TestCase):

    def test_a_worker_reuses_its_copy_of_the_parameters(self):
        cfg, tok = tiny()
        floats = md.as_floats(md.Model.new(cfg, tok).params)
        replica, values = lab._local(md.Model(cfg, tok, floats))
        floats['wpe'][2][1] += 0.5
        again, again_values = lab._local(md.Model(cfg, tok, floats))
        self.assertIs(again, replica)
        self.assertEqual(md.as_floats(again.params), floats)  # the numbers follow the floats
        self.assertEqual([v.data for v in again_values], [v.data for v in md.flatten(again.params)])
        model = md.Model.new(cfg, tok)  # a model of Values is used as it is
        self.assertIs(lab._local(model)[0], model)


class CheckpointTest(unittest.TestCase):

    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)
        self.path = os.path.join(self.folder.name, 'model.json')

    def test_round_trip_reproduces_logits_exactly(self):
        for denoiser in ('transformer', 'mlp'):
            cfg, tok = tiny(denoiser=denoiser, mlp_hidden=8)
            model = md.Model.new(cfg, tok)
            lab.save_checkpoint(self.path, model)
            loaded, training = lab.load_checkpoint(self.path)
            self.assertIsNone(training)
            self.assertEqual(loaded.tok.chars, tok.chars)
            self.assertEqual(loaded.cfg.denoiser, denoiser)
            tokens = [tok.MASK] * 5 + tok.encode('ava', 11)
            expected = model.frozen().logits(tokens, [0, 2, 4])
            got = loaded.frozen().logits(tokens, [0, 2, 4])
            self.assertEqual(got, expected)
            with open(self.path) as f:
                doc = json.load(f)
            self.assertEqual(set(doc['config']) >= {'n_embd', 'n_head', 'n_layer', 'block_size'},
                             True)
            self.assertEqual(doc['chars'], tok.chars)

    def test_a_failed_write_keeps_the_old_file(self):
        with open(self.path, 'w') as f:
            f.write('the previous checkpoint')
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        model.params['wpe'][0][0].data = float('nan')  # cannot be written as JSON
        with self.assertRaises(ValueError):
            lab.save_checkpoint(self.path, model)
        with open(self.path) as f:
            self.assertEqual(f.read(), 'the previous checkpoint')
        self.assertEqual(os.listdir(self.folder.name), ['model.json'])  # no temporary left

    def test_damaged_checkpoints_are_refused(self):
        cfg, tok = tiny()
        lab.save_checkpoint(self.path, md.Model.new(cfg, tok))
        with open(self.path) as f:
            good = json.load(f)

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
                 (variant(lambda d: d.update(chars=['a', 'a'])), 'chars'),
                 (json.dumps(good).replace(str(good['params']['wpe'][0][0]), 'NaN', 1),
                  'not a finite number')]
        with_state = json.loads(json.dumps(good))
        model = md.Model.new(cfg, tok)
        n = len(md.flatten(model.params))
        with_state['training'] = {'step': 1, 'settings': dataclasses.asdict(cfg), 'adam_t': 1,
                                  'data_fingerprint': 'x', 'adam_m': [0.0] * n, 'adam_v': [0.0] * n}

        def training(**settings):
            doc = json.loads(json.dumps(with_state))
            doc['training']['settings'].update(settings)
            return json.dumps(doc)
        cases += [(training(t_min=-0.5), 't_min = -0.5 is out of range'),
                  (training(beta2=1.5), 'beta2'), (training(val_every=0), 'val_every'),
                  (variant(lambda d: d['config'].update(n_layer=10_000_000)), 'n_layer'),
                  (variant(lambda d: d['config'].update(n_embd=1024, n_layer=64)),
                   'more than 200,000 parameters'),
                  ('{"a": ' + '1' * 5000 + '}', 'JSON'), ('[' * 100_000, 'not JSON'),
                  (json.dumps(good).replace(str(good['params']['wpe'][0][0]), '1e308', 1),
                   'at most 1e6')]
        for text, message in cases:
            with open(self.path, 'w') as f:
                f.write(text)
            with self.assertRaisesRegex(lab.UserError, message):
                lab.load_checkpoint(self.path, resuming=True)
        # a checkpoint written by another tool: just chars (here one string), config, params
        minimal = {'chars': ''.join(tok.chars), 'config': good['config'], 'params': good['params']}
        with open(self.path, 'w') as f:
            json.dump(minimal, f)
        loaded, state = lab.load_checkpoint(self.path)
        self.assertIsNone(state)
        self.assertEqual(md.as_floats(loaded.params), good['params'])


class TrainingTest(unittest.TestCase):

    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)
        self.path = os.path.join(self.folder.name, 'model.json')

    def run_training(self, cfg, tok, workers=1, state=None, stop_after=None, model=None):
        model = model or md.Model.new(cfg, tok)
        train, held = SHORT_NAMES[:24], SHORT_NAMES[24:]
        with lab.Workers(workers) as pool:
            lab.run_training(model, train, held, lab.fingerprint(train), self.path, pool, state,
                             stop_after)
        return model

    def quiet(self):
        """Training reports progress on stderr; keep the test output clean."""
        devnull = open(os.devnull, 'w')
        self.addCleanup(devnull.close)
        from contextlib import redirect_stderr
        return redirect_stderr(devnull)

    def test_the_lab_trains_exactly_as_part_1(self):
        # run_training adds processes, validation and saving around Part 1's train_step
        cfg, _ = smaller(steps=6, batch_size=3, val_every=2)
        names = SHORT_NAMES[:24]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            plain = md.train(cfg, names, log_every=3)
        self.assertEqual(out.getvalue().count('loss'), 2)
        for workers in (1, 2):
            trained = md.Model.new(cfg, md.Tokenizer.from_names(names),
                                   md.length_odds(names, cfg.block_size))
            with self.quiet(), lab.Workers(workers) as pool:
                lab.run_training(trained, names, names[:3], lab.fingerprint(names), self.path,
                                 pool)
            self.assertEqual(md.as_floats(trained.params), md.as_floats(plain.params))
        self.assertEqual(md.sample(plain, 3, seed=5), md.sample(trained, 3, seed=5))
        with lab.Workers(2) as pool:
            streamed = [name for name, _ in lab.sample_names(trained, 3, 5, md.Sampling(), pool)]
        self.assertEqual(streamed, md.sample(plain, 3, seed=5))

    def test_a_debugger_keeps_everything_in_one_process(self):
        tracer = sys.gettrace()
        self.addCleanup(sys.settrace, tracer)
        sys.settrace(None)
        with contextlib.redirect_stderr(io.StringIO()) as said:
            self.assertEqual(lab.Workers(2).n, 2)
        self.assertEqual(said.getvalue(), '')
        sys.settrace(lambda *args: None)
        with contextlib.redirect_stderr(io.StringIO()) as said:
            alone = lab.Workers(2).n
        sys.settrace(tracer)
        self.assertEqual(alone, 1)
        self.assertIn('a debugger is attached', said.getvalue())

    def test_a_short_run_lowers_the_loss(self):
        cfg, tok = smaller(steps=60, batch_size=4, lr=0.03)
        lengths = md.length_odds(SHORT_NAMES[:24], cfg.block_size)
        model = md.Model.new(cfg, tok, lengths)

        def mean_nelbo(floats):
            frozen = md.Model(cfg, tok, floats, lengths=lengths)
            return sum(md.nelbo(frozen, frozen.encode(n), random.Random(i))
                       for i, n in enumerate(SHORT_NAMES[:24])) / 24

        before = mean_nelbo(md.as_floats(model.params))
        with self.quiet():
            self.run_training(cfg, tok, model=model)
        after = mean_nelbo(md.as_floats(model.params))
        # uniform guessing costs ln(26) = 3.3 nats a letter; 60 steps learn common letters
        self.assertLess(after, before - 3.0, f'NELBO {before:.2f} -> {after:.2f}')

    def test_resume_continues_exactly(self):
        cfg, tok = smaller(steps=12, batch_size=2, val_every=5)
        with self.quiet():
            straight = self.run_training(cfg, tok)
            _, whole = lab.load_checkpoint(self.path)
            self.run_training(cfg, tok, stop_after=7)
            resumed, state = lab.load_checkpoint(self.path)
            self.assertEqual(state['step'], 7)
            resumed.cfg = cfg
            self.run_training(cfg, tok, state=state, model=resumed)
        self.assertEqual(md.as_floats(resumed.params), md.as_floats(straight.params))
        _, final = lab.load_checkpoint(self.path)
        self.assertEqual(final['step'], 12)
        # the history survives the resume: the same rows as the straight run's, but the seconds
        self.assertEqual([row[:4] for row in final['history']],
                         [row[:4] for row in whole['history']])
        self.assertEqual([row[0] for row in whole['history']], list(range(1, 13)))
        self.assertEqual([row[3] is not None for row in whole['history']],
                         [step in (5, 10, 12) for step in range(1, 13)])
        seconds = [row[4] for row in final['history']]
        self.assertEqual(seconds, sorted(seconds))
        svg = ET.fromstring(lab.curve_svg(final['history']))
        line = svg.find('{http://www.w3.org/2000/svg}polyline').get('points').split()
        self.assertEqual(len(line), 12)
        self.assertEqual(len(svg.findall('{http://www.w3.org/2000/svg}circle')), 3)
        chart = lab.curve_chart(final['history'])
        self.assertEqual(sum(line.count('o') for line in chart[:-1]), 3)

    def test_an_older_checkpoint_resumes_and_a_short_one_is_refused(self):
        cfg, tok = smaller(steps=6, batch_size=2)
        with self.quiet():
            straight = self.run_training(cfg, tok)
            self.run_training(cfg, tok, stop_after=3)
        with open(self.path) as f:
            doc = json.load(f)
        doc['training']['settings'].update(temp_start=1.2, temp_end=0.3)  # older versions had these
        with open(self.path, 'w') as f:
            json.dump(doc, f)
        resumed, state = lab.load_checkpoint(self.path, resuming=True)
        self.assertEqual(set(state['settings']), set(dataclasses.asdict(cfg)))
        resumed.cfg = md.Config(**state['settings'])
        with self.quiet():
            self.run_training(resumed.cfg, tok, state=state, model=resumed)
        self.assertEqual(md.as_floats(resumed.params), md.as_floats(straight.params))
        del doc['training']['settings']['lr']
        with open(self.path, 'w') as f:
            json.dump(doc, f)
        with self.assertRaisesRegex(lab.UserError, 'settings lack lr'):
            lab.load_checkpoint(self.path, resuming=True)
        self.assertIsNotNone(lab.load_checkpoint(self.path)[0])  # what sample needs is there

    def test_workers_do_not_change_the_result(self):
        cfg, tok = smaller(steps=3, batch_size=3)
        with self.quiet():
            alone = self.run_training(cfg, tok, workers=1)
            shared = self.run_training(cfg, tok, workers=2)
        self.assertEqual(md.as_floats(shared.params), md.as_floats(alone.params))

    def test_divergence_stops_and_leaves_the_checkpoint(self):
        cfg, tok = smaller(steps=50, lr=1e100)
        with open(self.path, 'w') as f:
            f.write('an earlier checkpoint')
        with self.quiet(), self.assertRaisesRegex(lab.UserError, 'diverged at step .* untouched'):
            self.run_training(cfg, tok)
        with open(self.path) as f:
            self.assertEqual(f.read(), 'an earlier checkpoint')

    def test_progress_on_a_pipe_shows_every_minute(self):
        # a million names at 5 a second: a tenth would take hours, so a line every minute
        clock = [0.0]
        with mock.patch.object(lab.time, 'perf_counter', lambda: clock[0]), \
                contextlib.redirect_stderr(io.StringIO()) as said:
            progress = lab.Progress(10**6, 'name')
            for done in range(50, 1001, 50):
                clock[0] += 10.0  # ten seconds a share of 50
                progress.update(done)
        self.assertEqual([line.split()[1] for line in said.getvalue().splitlines()],
                         ['300/1000000', '600/1000000', '900/1000000'])


if __name__ == '__main__':
    unittest.main()
