"""The variants in variants/: the padded block, the GPT, running text and the MLP denoiser,
each what it overrides; which kinds of model there can be; every one of them trains."""

import itertools
import math
import random
import statistics
import unittest

import microdiffusion as md
import variants
from variants import GPT, MLP, Padded, Text, TextGPT
from variants.mlp import MLPConfig
from variants.padded import Sampling as PaddedSampling
from variants.text import Windows, write

from . import NAMES, Uniform, stub, tiny
from .test_algorithm import (Fixed, assert_gradients_match, exact_nelbo, odds, random_picks)


class KindsTest(unittest.TestCase):

    def test_the_kinds_there_can_be(self):
        made = {}
        for model, denoiser, padding, text in itertools.product(
                ('diffusion', 'gpt'), ('transformer', 'mlp'), (False, True), (False, True)):
            try:
                name = variants.choose(model, denoiser, padding, text)
            except ValueError as e:
                made[model, denoiser, padding, text] = str(e)
                continue
            kind = variants.VARIANTS[name]
            self.assertEqual(variants.flags(kind), dict(model=model, denoiser=denoiser,
                                                        padding=padding, text=text))
            made[model, denoiser, padding, text] = name
        self.assertEqual(sorted(n for n in made.values() if n in variants.VARIANTS),
                         sorted(variants.VARIANTS))  # each variant once
        self.assertIn('a GPT is the transformer', made['gpt', 'mlp', False, False])
        self.assertIn('--padding: a GPT', made['gpt', 'transformer', True, False])
        self.assertIn('--padding: running text has no ends', made['diffusion', 'mlp', True,
                                                                  True])

    def test_every_variant_trains_and_samples(self):
        text = 'the cat sat on the mat. the dog sat on the log. ' * 3
        for name, kind in variants.VARIANTS.items():
            cfg = variants.config_class(kind)(n_embd=8, n_head=2, n_layer=1, block_size=8,
                                              steps=3, batch_size=2)
            data = text if issubclass(kind, Text) else [n for n in NAMES if len(n) < 8]
            model = md.train(cfg, data, log_every=0, kind=kind)
            self.assertIs(type(model), kind)
            frozen = model.frozen()
            self.assertIs(type(frozen), kind, name)  # frozen keeps the class
            if issubclass(kind, Text):
                fresh = [t for block, _ in write(frozen, [], 5, random.Random(0), md.Sampling(),
                                                 7 if issubclass(kind, GPT) else None)
                         for t in block]
                self.assertEqual(len(fresh), 5)
            else:
                names = md.sample(model, 3, seed=1)
                self.assertTrue(all(set(n) <= set(model.tok.chars) for n in names), name)
            self.assertEqual(len(md.flatten(model.params)), sum(
                r * c for r, c in kind.shapes(cfg, model.tok.vocab_size).values()))


class PaddedTest(unittest.TestCase):
    """Every name PAD-filled to the block; its end erased and predicted like a letter."""

    def test_the_block_every_position_erasable(self):
        cfg, tok = tiny()
        model = Padded(cfg, tok, None)
        self.assertEqual(model.encode('emma'), tok.encode('emma', 16))
        self.assertEqual(model.erasable(model.encode('emma')), list(range(16)))
        self.assertEqual(model.outputs, list(range(len(tok.chars))) + [tok.PAD])
        self.assertIsNone(model.lengths)
        self.assertEqual((model.longest(cfg), model.length_nll(model.encode('emma'))), (16, 0.0))

    def test_loss_and_nelbo_of_a_model_that_knows_nothing(self):
        cfg, tok = tiny()
        uniform = Uniform(tok.vocab_size)
        model = stub(Padded, uniform, cfg, tok)
        tokens = model.encode('ava')
        expected = 16 * math.log(len(tok.chars) + 1)  # 16 positions: a letter or PAD each
        for seed in range(3):
            self.assertAlmostEqual(md.nelbo(model, tokens, random.Random(seed)), expected, 9)
            self.assertAlmostEqual(md.nelbo_one_pass(model, tokens, random.Random(seed)),
                                   expected, 9)
        self.assertAlmostEqual(md.left_to_right_nll(model, tokens), expected, 9)
        rng = random.Random(5)
        losses = [md.diffusion_loss(model, tokens, t, rng)
                  for t in md.noise_levels(rng, cfg.t_min, 20000)]
        share = (1 - cfg.t_min) * 16 * math.log(len(tok.chars) + 1)  # see the lesson's test
        self.assertAlmostEqual(statistics.fmean(losses) / share, 1.0, delta=0.02)

    def test_nelbo_estimates_average_to_the_exact_sum_over_subsets(self):
        cfg, tok = tiny(block_size=5)
        model = stub(Padded, lambda tokens, positions: odds(tok, tokens, positions), cfg, tok)
        tokens = model.encode('eva')
        exact = exact_nelbo(model, tokens)
        orders = list(itertools.permutations(range(5)))
        by_orders = sum(md.nelbo(model, tokens, Fixed(0, order)) for order in orders)
        self.assertAlmostEqual(by_orders / len(orders), exact, places=9)

    def test_places_the_end_first_then_the_letters(self):
        cfg, tok = tiny()
        params = md.as_floats(md.Model.new(cfg, tok).params)

        def ends_by_8(tokens, positions):  # the transformer, nudged to end names
            logits = md.transformer(params, cfg, tokens, positions)
            for lg, i in zip(logits, positions):
                lg[tok.PAD] += 1.5 * (i - 5)
            return logits

        model, ends = stub(Padded, ends_by_8, cfg, tok), set()
        for seed in range(12):
            trace = []
            seq = md.sample_tokens(model, random.Random(seed), md.Sampling(
                steps=20, temperature=0.7, loop_passes=0), trace)
            end = len(tok.decode(seq))
            if end < cfg.block_size:  # the length step: only PADs placed, from the end on
                self.assertEqual(trace[0][3], [tok.MASK] * end + [tok.PAD] * (16 - end))
                self.assertEqual(trace.pop(0)[:3], (20, 1.0, 1.0))  # drawn at T = 1
            counts = md.masked_counts(end, 20)  # (no PAD drawn: no step that changes nothing)
            self.assertEqual([i for i, _, _, _ in trace],
                             [i for i in range(20, 0, -1) if counts[i - 1] != counts[i]])
            for i, t, T, tokens in trace:
                self.assertEqual(tokens.count(tok.MASK), counts[i - 1])
                self.assertEqual(tokens[end:], [tok.PAD] * (16 - end))
            self.assertNotIn(tok.MASK, seq)
            self.assertNotIn(tok.PAD, seq[:end])  # every position before the end is a letter
            ends.add(end)
        self.assertGreater(len(ends), 2)
        self.assertLess(max(ends), cfg.block_size)
        trace = []  # a pattern of fixed length: no length step
        md.sample_tokens(model, random.Random(0), md.Sampling(
            steps=64, loop_passes=0, pattern=md.parse_pattern('m_r__', model)), trace)
        self.assertEqual([tokens.count(tok.MASK) for _, _, _, tokens in trace], [2, 1, 0])
        trace = []  # --length along: the end is found with the letters, the whole block
        md.sample_tokens(model, random.Random(0), PaddedSampling(length='along', steps=64),
                         trace)
        self.assertEqual(trace[0][3].count(tok.MASK), md.masked_counts(16, 64)[trace[0][0] - 1])

    def test_length_follows_its_odds_whatever_the_temperature(self):
        cfg, tok = tiny(block_size=6)
        n_letters = len(tok.chars)
        ends_by = [0.1, 0.2, 0.2, 0.5, 0.9, 0.95]  # P(PAD at i): the name has ended by i
        # (position 2 says less than position 1: the curve is read as its running maximum)

        def ending(tokens, positions):
            # every letter logit 0; PAD's gives P(PAD) = ends_by[i] while all is masked
            return [[0.0] * n_letters + [0.0, math.log(ends_by[i] / (1 - ends_by[i]) * n_letters)
                                         if tokens.count(tok.MASK) == len(tokens) else 0.0]
                    for i in positions]

        model = stub(Padded, ending, cfg, tok)
        expected = [0.1, 0.1, 0.0, 0.3, 0.4, 0.05, 0.05]  # lengths 0..6 (6: no PAD at all)
        for temperature in (1.0, 0.3):
            how = md.Sampling(temperature=temperature, loop_passes=0)  # (lengths: no loop)
            lengths = [len(tok.decode(md.sample_tokens(model, random.Random(s), how)))
                       for s in range(3000)]
            for n, p in enumerate(expected):
                self.assertAlmostEqual(lengths.count(n) / 3000, p, delta=0.025)
            if temperature == 1.0:
                at_one = lengths
        self.assertEqual(lengths, at_one)  # the same draws: the temperature only shapes letters

    def test_patterns_and_what_comes_out(self):
        cfg, tok = tiny()
        model = Padded.new(cfg, tok)
        for pattern, length in itertools.product(('m_r__', 'ka*', '_', '*', 'emma'),
                                                 ('first', 'along')):
            how = PaddedSampling(pattern=md.parse_pattern(pattern, model), length=length)
            for seed in range(3):
                seq = md.sample_tokens(model.frozen(), random.Random(seed), how)
                name, body = tok.decode(seq), pattern.rstrip('*')
                self.assertTrue(all(c == '_' or name[i] == c for i, c in enumerate(body)))
                self.assertTrue(len(name) >= len(body))
                if not pattern.endswith('*'):
                    self.assertEqual(len(name), len(body))
                self.assertNotIn(tok.MASK, seq)
                if length == 'first':  # the end placed first: nothing after it
                    self.assertEqual(seq[len(name):], [tok.PAD] * (16 - len(name)))
        with self.assertRaisesRegex(ValueError, "'\\*' may only come last"):
            md.parse_pattern('ka*a', model)
        with self.assertRaisesRegex(ValueError, 'at most 16'):
            md.parse_pattern('a' * 17, model)


class GPTTest(unittest.TestCase):
    """The same transformer, causal, trained on the next token; its loss is the exact -log p."""

    def test_uniform_logits_give_n_plus_one_times_log_v(self):
        cfg, tok = tiny()
        uniform = stub(GPT, Uniform(tok.vocab_size), cfg, tok)
        for name in ('ava', 'isabella', 'a'):
            # it predicts n letters and the end, each one of V = letters + PAD (never MASK)
            expected = (len(name) + 1) * math.log(len(tok.chars) + 1)
            tokens = uniform.encode(name)
            self.assertAlmostEqual(uniform.nll(tokens), expected, places=12)
            self.assertAlmostEqual(uniform.loss(tokens, 0.5, None), expected, places=12)
            self.assertAlmostEqual(md.left_to_right_nll(uniform, tokens), expected, places=12)

    def test_it_reads_behind_a_start_token_only_what_came_before(self):
        cfg, tok = tiny()
        model = GPT.new(cfg, tok).frozen()
        a, b = model.encode('emma'), model.encode('emmy')  # the same start, another letter
        la, lb = model.logits(a, range(5)), model.logits(b, range(5))
        self.assertEqual(la[:4], lb[:4])  # up to the changed letter: nothing after it is read
        self.assertNotEqual(la[4], lb[4])
        start = [tok.MASK]  # MASK's row is the start token: position i predicts token i
        self.assertEqual(la, md.transformer(model.params, cfg, start + a[:4], range(5), True))
        self.assertEqual(model.logits(a, [2]), [la[2]])  # one position: the same logits
        self.assertEqual(md.left_to_right_nll(model, a), model.nll(a))  # one pass, or five
        self.assertAlmostEqual(model.nll(a, seen=2),
                               sum(md.token_nll(la[i], a[i], model.outputs) for i in (2, 3, 4)))

    def test_gradient_matches_finite_differences(self):
        cfg, tok = tiny()
        model = GPT.new(cfg, tok)
        tokens = model.encode('jacob')
        assert_gradients_match(self, model, lambda m: m.nll(tokens),
                               random_picks(model.params, 2, 1))

    def test_sampling_goes_left_to_right_and_stops_at_the_end(self):
        cfg, tok = tiny(n_embd=8, n_head=2, block_size=8)
        model = GPT.new(cfg, tok).frozen()
        for seed in range(10):
            trace = []  # the default Sampling: a GPT fills left to right all the same
            seq = md.sample_tokens(model, random.Random(seed), md.Sampling(), trace)
            name = tok.decode(seq)
            self.assertLess(len(name), cfg.block_size)  # the start token takes one position
            self.assertEqual(seq, tok.encode(name, cfg.block_size))  # nothing after the end
            self.assertEqual([step for step, *_ in trace], list(range(1, len(name) + 2)))
            for k, (_, _, _, tokens) in enumerate(trace):  # one more position each step
                self.assertEqual(tokens[:k], seq[:k])
        how = md.Sampling(pattern=md.parse_pattern('ka*', model))
        self.assertTrue(all(tok.decode(md.sample_tokens(model, random.Random(s), how))
                            .startswith('ka') for s in range(5)))
        for pattern, message in (('k_a*', 'a GPT reads left to right'), ('*lyn', 'only come last'),
                                 ('a' * 8, 'at most 7')):
            with self.assertRaisesRegex(ValueError, message):
                md.parse_pattern(pattern, model)
        self.assertEqual(md.parse_pattern('ka__', model)[1], None)


class TextTest(unittest.TestCase):
    """Running text: windows with no end, and writing past one block."""

    TEXT = 'the cat sat on the mat.\nthe dog sat on the log.\n' * 4

    def model(self, kind=Text, **changes):
        cfg = md.Config(block_size=8, n_embd=8, n_head=2, **changes)
        return kind.new(cfg, md.Tokenizer.from_names(self.TEXT))

    def test_windows_are_drawn_from_the_text_by_step(self):
        model = self.model(batch_size=5)
        batches = model.batches(self.TEXT)
        self.assertIsInstance(batches, Windows)
        windows = batches.at(3)
        self.assertEqual(len(windows), 5)
        self.assertTrue(all(len(w) == 8 and w in self.TEXT for w in windows))
        self.assertEqual(model.batches(self.TEXT).at(3), windows)  # from the step alone
        self.assertNotEqual(batches.at(4), windows)
        self.assertIn('\n', ''.join(batches.at(s)[0] for s in range(20)))  # newlines are text

    def test_a_window_has_no_end_and_no_length(self):
        for kind in (Text, TextGPT):
            model = self.model(kind)
            tok, tokens = model.tok, model.encode('the cat.')
            self.assertEqual(tokens, [tok.ids[c] for c in 'the cat.'])  # no PAD
            self.assertEqual(model.outputs, list(range(len(tok.chars))))
            self.assertIsNone(model.lengths)
            self.assertEqual(model.erasable(tokens), list(range(8)))
            self.assertEqual(model.length_nll(tokens), 0.0)
            uniform = stub(kind, Uniform(tok.vocab_size), model.cfg, tok)
            expected = 8 * math.log(len(tok.chars))  # each character one of the characters
            score = (uniform.nll(tokens) if kind is TextGPT else
                     md.nelbo(uniform, tokens, random.Random(0)))
            self.assertAlmostEqual(score, expected, places=9)

    def test_writing_block_after_block(self):
        # the prompt's last `context` characters are seen (at most 7: a block of 8 writes one)
        for kind, context, first_two in ((Text, 3, [5, 5]), (TextGPT, 7, [4, 1]),
                                         (Text, 50, [4, 1])):
            model = self.model(kind).frozen()
            tok = model.tok
            prompt = [tok.ids[c] for c in 'the ']
            blocks = list(write(model, prompt, 13, random.Random(1), md.Sampling(), context,
                                trace=True))
            written = [t for fresh, _ in blocks for t in fresh]
            self.assertEqual(len(written), 13)  # exactly as many as asked, every one a character
            self.assertTrue(all(t < len(tok.chars) for t in written))
            self.assertEqual([len(fresh) for fresh, _ in blocks][:2], first_two)
            text = prompt + written
            done = len(prompt)
            for fresh, trace in blocks:  # what was written stays, the block's start visible
                seen = text[max(0, done - min(context, 7)):done]
                for *_, tokens in trace:
                    self.assertEqual(tokens[:len(seen)], seen)
                self.assertEqual(trace[-1][3], seen + fresh)
                done += len(fresh)


class MLPTest(unittest.TestCase):

    def test_shapes_and_gradient(self):
        cfg, tok = tiny(MLPConfig, mlp_hidden=8)
        model = MLP.new(cfg, tok)
        width = cfg.block_size * tok.vocab_size
        self.assertEqual({name: (len(rows), len(rows[0])) for name, rows in model.params.items()},
                         {'mlp_in': (8, width), 'mlp_out': (width, 8)})
        tokens = model.encode('emma')  # 5 of its 16 positions: the rest read as PAD
        assert_gradients_match(self, model, lambda m: md.diffusion_loss(
            m, tokens, 0.5, random.Random(1)), random_picks(model.params, 6, 2))

    def test_it_reads_the_whole_block_one_hot(self):
        cfg, tok = tiny(MLPConfig, mlp_hidden=3)
        model = MLP.new(cfg, tok).frozen()
        tokens = [tok.ids['a'], tok.MASK, tok.PAD]
        hidden = [max(0.0, sum(row[i * tok.vocab_size + t] for i, t in enumerate(
            tokens + [tok.PAD] * 13))) for row in model.params['mlp_in']]
        out = model.params['mlp_out']
        expected = [sum(w * h for w, h in zip(out[tok.vocab_size + v], hidden))
                    for v in range(tok.vocab_size)]
        for a, b in zip(model.logits(tokens, [1])[0], expected):
            self.assertAlmostEqual(a, b, places=12)


if __name__ == '__main__':
    unittest.main()
