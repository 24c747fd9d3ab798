"""The algorithm in microdiffusion.py: tokenizer, denoisers, the noise and the loss, the ELBO,
the samplers, GPT, Adam and the plain training loop."""

import itertools
import math
import os
import random
import statistics
import tempfile
import unittest

import microdiffusion as md
from value import Value

from . import NAMES, UniformDenoiser, smaller, tiny


def float_loss(model, float_params, tokens, seed, t=0.5):
    floats = md.Model(model.cfg, model.tok, float_params, model.denoiser)
    return md.diffusion_loss(floats, tokens, t, random.Random(seed))


class DataTest(unittest.TestCase):

    def test_tokenizer_round_trip(self):
        tok = md.Tokenizer.from_names(['zoe', 'ana', 'éva'])
        self.assertEqual(tok.chars, ['a', 'e', 'n', 'o', 'v', 'z', 'é'])
        self.assertEqual((tok.MASK, tok.PAD, tok.vocab_size), (7, 8, 9))
        for name in ('zoe', 'ana', 'éva', 'a', 'zzzzzzzzzzzzzzzz'):
            tokens = tok.encode(name, 16)
            self.assertEqual(len(tokens), 16)
            self.assertEqual(tokens[len(name):], [tok.PAD] * (16 - len(name)))
            self.assertEqual(tok.decode(tokens), name)
        with self.assertRaises(ValueError):
            tok.decode([0, tok.MASK])
        # a name ends at its first PAD: letters after it are not part of the name
        self.assertEqual(tok.decode(tok.encode('ana', 5)[:3] + [tok.PAD, 0]), 'ana')
        self.assertEqual(tok.decode([tok.PAD, 0, 1]), '')

    def test_the_plain_loader_reads_one_name_a_line(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'names.txt')
            with open(path, 'w', encoding='utf-8') as f:
                f.write('  emma \n\n\t\nzoë\no\'neil\n')
            self.assertEqual(md.load_names(path), ['emma', 'zoë', "o'neil"])

    def test_batches_cover_each_epoch_once(self):
        cfg = md.Config(batch_size=4, seed=1)
        batches = md.Batches(NAMES, cfg)
        epoch = [name for step in range(len(NAMES) // 4) for name in batches.at(step)]
        self.assertEqual(sorted(epoch), sorted(NAMES))
        self.assertNotEqual(epoch, NAMES)
        self.assertEqual(md.Batches(NAMES, cfg).at(13), batches.at(13))
        self.assertNotEqual(md.Batches(NAMES, md.Config(batch_size=4, seed=2)).at(0),
                            batches.at(0))


class ModelTest(unittest.TestCase):

    def test_parameters_are_the_specified_6848(self):
        cfg = md.Config()
        params = md.init_params(md.transformer_shapes(cfg, 28), 0.08, random.Random(0))
        shapes = {name: (len(rows), len(rows[0])) for name, rows in params.items()}
        expected = {'wte': (28, 16), 'wpe': (16, 16)}
        for layer in (0, 1):
            for name in ('attn_wq', 'attn_wk', 'attn_wv', 'attn_wo'):
                expected[f'layer{layer}.{name}'] = (16, 16)
            expected[f'layer{layer}.mlp_fc1'] = (64, 16)
            expected[f'layer{layer}.mlp_fc2'] = (16, 64)
        self.assertEqual(shapes, expected)
        values = md.flatten(params)
        self.assertEqual(len(values), 6848)
        self.assertEqual(len({id(v) for v in values}), 6848)
        spread = [v.data for v in values]
        self.assertAlmostEqual(sum(x * x for x in spread) / len(spread), 0.08 ** 2, delta=0.0005)

    def test_adam_updates_the_tied_matrix_once_per_step(self):
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        values = md.flatten(model.params)
        before = [v.data for v in values]
        adam = md.Adam(values, cfg)
        self.assertEqual(len(adam.m), len(values))
        adam.step([1.0] * len(values), lr=0.01)
        # Adam's first step moves every parameter by lr (m̂ = g, v̂ = g²): once, not twice
        for v, b in zip(values, before):
            self.assertAlmostEqual(b - v.data, 0.01, places=9)

    def test_loss_gradient_matches_finite_differences(self):
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        tokens = tok.encode('isabella', cfg.block_size)
        seed = 3
        loss = md.diffusion_loss(model, tokens, 0.5, random.Random(seed))
        loss.backward()
        floats = md.as_floats(model.params)
        self.assertEqual(float_loss(model, floats, tokens, seed), loss.data)
        rng = random.Random(0)
        picks = [('wte', tok.ids['a'], 3),   # embeds an input letter and scores it
                 ('wte', tok.PAD, 0),        # PAD: an input and a target
                 ('wte', tok.ids['y'], 5),   # not in the name: reached only as an output
                 ('wte', tok.MASK, 7)]       # MASK: reached only as an input
        for name in sorted(model.params):
            rows = model.params[name]
            picks += [(name, rng.randrange(len(rows)), rng.randrange(len(rows[0])))
                      for _ in range(3)]
        h = 1e-6
        for name, i, j in picks:
            original = floats[name][i][j]
            floats[name][i][j] = original + h
            up = float_loss(model, floats, tokens, seed)
            floats[name][i][j] = original - h
            down = float_loss(model, floats, tokens, seed)
            floats[name][i][j] = original
            numeric = (up - down) / (2 * h)
            grad = model.params[name][i][j].grad
            self.assertTrue(math.isclose(grad, numeric, rel_tol=1e-4, abs_tol=1e-8),
                            f'{name}[{i}][{j}]: backward {grad}, numeric {numeric}')
        self.assertNotEqual(model.params['wte'][tok.MASK][7].grad, 0.0)

    def test_training_gradient_with_a_tape_is_the_searched_one(self):
        # name_gradient (training) records the graph on a Tape; backward() searches for it
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        values = md.flatten(model.params)
        tokens = tok.encode('isabella', cfg.block_size)
        loss, taped = md.name_gradient(model, values, (tokens, 0.5, 3))
        self.assertTrue(all(v.grad == 0.0 for v in values))  # handed over, and reset
        searched = md.diffusion_loss(model, tokens, 0.5, random.Random(3))
        searched.backward()
        self.assertEqual(searched.data, loss)
        self.assertGreater(sum(1 for g in taped if g), len(values) // 2)
        for v, g in zip(values, taped):
            self.assertTrue(math.isclose(v.grad, g, rel_tol=1e-12, abs_tol=1e-15))

    def test_mlp_denoiser_gradient(self):
        cfg, tok = tiny(denoiser='mlp', mlp_hidden=8)
        model = md.Model.new(cfg, tok)
        tokens = tok.encode('emma', cfg.block_size)
        loss = md.diffusion_loss(model, tokens, 0.5, random.Random(1))
        loss.backward()
        floats = md.as_floats(model.params)
        rng = random.Random(2)
        for name in ('mlp_in', 'mlp_out'):
            rows = floats[name]
            for _ in range(6):
                i, j = rng.randrange(len(rows)), rng.randrange(len(rows[0]))
                original = rows[i][j]
                rows[i][j] = original + 1e-6
                up = float_loss(model, floats, tokens, 1)
                rows[i][j] = original - 1e-6
                down = float_loss(model, floats, tokens, 1)
                rows[i][j] = original
                self.assertTrue(math.isclose(model.params[name][i][j].grad, (up - down) / 2e-6,
                                             rel_tol=1e-4, abs_tol=1e-8))

    def test_floats_and_values_give_the_same_logits(self):
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        tokens = tok.encode('mia', cfg.block_size)
        tokens[1] = tokens[6] = tok.MASK
        with_graph = model.logits(tokens, [1, 6])
        without = model.frozen().logits(tokens, [1, 6])
        self.assertEqual([[v.data for v in lg] for lg in with_graph], without)
        self.assertEqual(len(without), 2)
        self.assertEqual(len(without[0]), tok.vocab_size)
        self.assertIsInstance(without[0][0], float)
        # asking for fewer positions does not change the logits at the ones asked for
        self.assertEqual(model.frozen().logits(tokens, [6])[0], without[1])

    def test_mlp_skipping_dead_units_changes_nothing(self):
        """mlp() makes no nodes for the units ReLU zeroes, and the residual + inside fc2's
        nodes: check it against x + fc2 · relu(fc1 · rmsnorm(x)) built from primitives."""
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        rng = random.Random(0)
        xs = [[Value(rng.gauss(0, 1)) for _ in range(cfg.n_embd)] for _ in range(5)]
        fast = md.mlp(model.params, 'layer0.', xs)
        fc1, fc2 = model.params['layer0.mlp_fc1'], model.params['layer0.mlp_fc2']
        relus = [[md.vsum([w * xi for w, xi in zip(row, md.rmsnorm(x))]).relu() for row in fc1]
                 for x in xs]
        self.assertTrue(any(h.data == 0 for hidden in relus for h in hidden))  # some are dead
        plain = [[xi + md.vsum([w * h for w, h in zip(row, hidden)]) for xi, row in zip(x, fc2)]
                 for x, hidden in zip(xs, relus)]
        self.assertEqual([[v.data for v in out] for out in fast],
                         [[v.data for v in out] for out in plain])
        values = md.flatten(model.params) + [x for vector in xs for x in vector]
        grads = []
        for outs in (fast, plain):
            md.vsum([v * (i + 1) for out in outs for i, v in enumerate(out)]).backward()
            grads.append([p.grad for p in values])
            for p in values:
                p.grad = 0.0
        for fast_grad, plain_grad in zip(*grads):  # the same sums, added in another order
            self.assertTrue(math.isclose(fast_grad, plain_grad, rel_tol=1e-12, abs_tol=1e-14))
        self.assertTrue(any(grads[0]))


class DiffusionTest(unittest.TestCase):
    """The forward process, the loss and the ELBO, for the length-first model and --padding."""

    def test_erase_at_a_noise_level(self):
        rng, positions = random.Random(0), list(range(16))
        self.assertEqual(md.erase(positions, 0.0, rng), [])
        self.assertEqual(md.erase(positions, 1.0, rng), positions)
        erased = sum(len(md.erase(positions, 0.3, rng)) for _ in range(2000))
        self.assertAlmostEqual(erased / (16 * 2000), 0.3, delta=0.01)

    def test_only_letters_are_erasable_unless_padding(self):
        cfg, tok = tiny()
        model, padded = md.Model(cfg, tok, None), md.Model(tiny(padding=True)[0], tok, None)
        self.assertEqual(model.encode('emma'), tok.encode('emma', 5))  # its letters and the end
        self.assertEqual(md.erasable(model, model.encode('emma')), [0, 1, 2, 3])
        self.assertEqual(padded.encode('emma'), tok.encode('emma', 16))  # the whole block
        self.assertEqual(md.erasable(padded, padded.encode('emma')), list(range(16)))
        letters = list(range(len(tok.chars)))
        self.assertEqual((model.outputs, padded.outputs), (letters, letters + [tok.PAD]))

    def test_noise_levels_are_log_uniform_and_spread(self):
        rng = random.Random(0)
        for n in (1, 4):
            ts = [t for _ in range(5000) for t in md.noise_levels(rng, 0.2, n)]
            self.assertTrue(all(0.2 <= t <= 1.0 for t in ts))
            mean_log = sum(map(math.log, ts)) / len(ts)
            self.assertAlmostEqual(mean_log, math.log(0.2) / 2, delta=0.01)
        # a batch's levels fall one in each quarter of the log range
        for _ in range(100):
            quarters = sorted(int(math.log(t) / math.log(0.2) * 4)
                              for t in md.noise_levels(rng, 0.2, 4))
            self.assertEqual(quarters, [0, 1, 2, 3])

    def test_mask_and_pad_are_never_predictions_unless_the_end_is(self):
        logits = [0.3, -1.0, 50.0, 9.0, 0.7]  # MASK = 3 and PAD = 4 of a 3-letter vocabulary
        for outputs in ([0, 1, 2], [0, 1, 2, 4]):
            nll = md.token_nll(logits, 1, outputs)
            expected = math.log(sum(math.exp(logits[v]) for v in outputs)) + 1.0
            self.assertAlmostEqual(nll, expected, places=12)

    def test_loss_scores_only_the_erased_letters(self):
        for padding in (False, True):
            cfg, tok = tiny(padding=padding)
            seen = []

            def denoiser(params, cfg, tokens, positions):
                seen.append((list(tokens), list(positions)))
                return [[0.0] * tok.vocab_size for _ in positions]

            model = md.Model(cfg, tok, None, denoiser)
            tokens = model.encode('emma')
            loss = md.diffusion_loss(model, tokens, 0.7, random.Random(4))
            noisy, positions = seen[0]
            self.assertEqual(positions, [i for i, t in enumerate(noisy) if t == tok.MASK])
            self.assertTrue(positions)
            self.assertTrue(set(positions) <= set(md.erasable(model, tokens)))
            self.assertEqual(noisy[-1] == tok.PAD, not padding or 15 not in positions)
            for i, t in enumerate(noisy):
                self.assertIn(t, (tokens[i], tok.MASK))
            # each erased token costs log(number of outputs) here, times log(1 / t_min),
            # times the chance that a mask is not empty (see diffusion_loss)
            kept = 1 - (1 - 0.7) ** len(md.erasable(model, tokens))
            self.assertAlmostEqual(loss, len(positions) * math.log(len(model.outputs))
                                   * math.log(1 / cfg.t_min) * kept, places=9)

    def test_loss_estimates_the_nelbo_from_t_min_up(self):
        # For a model that knows nothing, each erased token costs log(V), V the outputs, so
        # the NELBO's share from noise levels t_min..1 is the integral of 1/t · L·t · log(V) dt:
        # (1 - t_min) · L · log(V), L the erasable positions. The loss, averaged over
        # log-uniform t, must match it, however few positions there are.
        for padding, name in ((False, 'ava'), (False, 'a'), (True, 'ava')):
            cfg, tok = tiny(padding=padding)
            model = md.Model(cfg, tok, None, UniformDenoiser(tok.vocab_size))
            tokens, rng = model.encode(name), random.Random(5)
            losses = [md.diffusion_loss(model, tokens, t, rng)
                      for t in md.noise_levels(rng, cfg.t_min, 20000)]
            share = ((1 - cfg.t_min) * len(md.erasable(model, tokens))
                     * math.log(len(model.outputs)))
            self.assertAlmostEqual(statistics.fmean(losses) / share, 1.0, delta=0.02)

    def test_nelbo_of_a_model_that_knows_nothing(self):
        for padding in (False, True):
            cfg, tok = tiny(padding=padding)
            uniform = UniformDenoiser(tok.vocab_size)
            model = md.Model(cfg, tok, None, uniform, md.length_odds(NAMES, cfg.block_size))
            tokens = model.encode('ava')
            # padding: 16 positions, each one of the letters or PAD; length first: -log p(3),
            # then 3 letters
            expected = (16 * math.log(len(tok.chars) + 1) if padding else
                        -math.log(md.length_odds(NAMES, 16)[3]) + 3 * math.log(len(tok.chars)))
            for seed in range(3):
                got = md.nelbo(model, tokens, random.Random(seed))
                self.assertAlmostEqual(got, expected, places=9)
                one = md.nelbo_one_pass(model, tokens, random.Random(seed))
                self.assertAlmostEqual(one, expected, places=9)
                self.assertAlmostEqual(md.left_to_right_nll(model, tokens), expected, places=9)
            L = len(md.erasable(model, tokens))
            self.assertEqual(uniform.calls, 3 * L + 3 + 3 * L)

    def test_length_histogram_is_counted_and_smoothed(self):
        odds = md.length_odds(['ab', 'cd', 'efg'], 6)
        self.assertEqual(len(odds), 6)
        # counts 0, 0, 2, 1, 0, 0 plus one for every length from 1 to 5: 0, 1, 3, 2, 1, 1
        self.assertEqual(odds, [0.0, 1 / 8, 3 / 8, 2 / 8, 1 / 8, 1 / 8])
        self.assertAlmostEqual(sum(md.length_odds(NAMES, 16)), 1.0, places=12)
        self.assertTrue(all(p > 0 for p in md.length_odds(NAMES, 16)[1:]))

    def test_nelbo_estimates_average_to_the_exact_sum_over_subsets(self):
        # A stub whose odds depend on what is masked and what is visible, so every subset
        # counts differently. The exact NELBO is -log p(length) plus every subset M of the L
        # erasable positions with weight 1/k / C(L, k), k = |M|. nelbo() averaged over all
        # L! orders, and nelbo_one_pass() over every (k, M) it can draw, must equal it.
        def odds(params, cfg, tokens, positions):
            hidden = sum(1 for t in tokens if t == tok.MASK)
            seen = sum(t for t in tokens if t != tok.MASK)
            return [[math.sin(1.7 * v + 0.9 * i + 0.6 * hidden + 0.13 * seen)
                     for v in range(tok.vocab_size)] for i in positions]

        class Fixed:  # a random generator that draws what it is told to
            def __init__(self, k, picks):
                self.k, self.picks = k, list(picks)

            def sample(self, population, count):
                return self.picks[:count]

            def randint(self, low, high):
                return self.k

        for padding, name in ((False, 'evan'), (True, 'eva')):
            cfg, tok = tiny(block_size=5, padding=padding)
            model = md.Model(cfg, tok, None, odds, md.length_odds(['evan', 'eve', 'al'], 5))
            tokens = model.encode(name)
            positions = md.erasable(model, tokens)
            L = len(positions)
            self.assertEqual(L, 5 if padding else 4)
            exact = md.length_nll(model, tokens) + sum(
                md.erased_nll(model, tokens, list(subset)) / k / math.comb(L, k)
                for k in range(1, L + 1) for subset in itertools.combinations(positions, k))
            orders = list(itertools.permutations(positions))
            by_orders = sum(md.nelbo(model, tokens, Fixed(0, order)) for order in orders)
            self.assertAlmostEqual(by_orders / len(orders), exact, places=9)
            one_pass = sum(md.nelbo_one_pass(model, tokens, Fixed(k, subset)) / L
                           / math.comb(L, k) for k in range(1, L + 1)
                           for subset in itertools.combinations(positions, k))
            self.assertAlmostEqual(one_pass, exact, places=9)
            self.assertEqual(md.length_nll(model, tokens),
                             0.0 if padding else -math.log(2 / 7))  # 'evan': 1 + 1 of 7
            uniform = md.Model(cfg, tok, None, UniformDenoiser(tok.vocab_size))
            self.assertNotAlmostEqual(exact, md.nelbo(uniform, tokens, random.Random(0)), 2)

    def test_nelbo_bounds_a_trained_model_below_uniform(self):
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        tokens = model.encode('emma')
        estimates = [md.nelbo(model.frozen(), tokens, random.Random(s)) for s in range(4)]
        self.assertTrue(all(e > 0 for e in estimates))
        self.assertGreater(len(set(estimates)), 1)  # different orders, different estimates


class SamplerTest(unittest.TestCase):

    def test_schedule(self):
        counts = md.masked_counts(16, 64)
        self.assertEqual((counts[64], counts[0]), (16, 0))
        self.assertTrue(all(a <= b for a, b in zip(counts, counts[1:])))
        for i in (10, 32, 50):
            self.assertEqual(counts[i], round(16 * math.cos(math.pi / 2 * (1 - i / 64))))

    def test_follows_the_schedule_and_skips_idle_steps(self):
        calls = []

        def counting(params, cfg, tokens, positions):
            calls.append(len(positions))
            return md.transformer(params, cfg, tokens, positions)

        for padding in (True, False):  # the whole block, or the letters after the length
            cfg, tok = tiny(padding=padding)
            floats = md.as_floats(md.Model.new(cfg, tok).params)
            counted = md.Model(cfg, tok, floats, counting, md.length_odds(NAMES, 16))
            for steps in (64, 10, 3):
                calls.clear()
                trace, how = [], md.Sampling(steps=steps, length='along')
                seq = md.sample_tokens(counted, random.Random(steps), how, trace)
                if not padding:  # the length, drawn first: its blanks, then the end
                    n = len(tok.decode(seq))
                    self.assertEqual(trace.pop(0), (steps, 1.0, 1.0, [tok.MASK] * n + [tok.PAD]))
                counts = md.masked_counts(16 if padding else n, steps)
                decisive = [i for i in range(steps, 0, -1) if counts[i - 1] != counts[i]]
                self.assertEqual([entry[0] for entry in trace], decisive)
                for i, t, T, tokens in trace:
                    self.assertEqual(tokens.count(tok.MASK), counts[i - 1])
                    self.assertAlmostEqual(T, how.temp_end + (how.temp_start - how.temp_end) * t)
                self.assertEqual(calls, [counts[i] for i in decisive])  # one pass a step
                self.assertNotIn(tok.MASK, seq)
                self.assertEqual(len(seq), 16 if padding else n + 1)

    def test_length_first_draws_from_p_length_whatever_the_temperature(self):
        cfg, tok = tiny(block_size=6)
        lengths = [0.0, 0.1, 0.2, 0.3, 0.4, 0.0]
        model = md.Model(cfg, tok, None, UniformDenoiser(tok.vocab_size), lengths)
        for temperature in (1.0, 0.3):
            how = md.Sampling(temperature=temperature)
            drawn = [md.sample_tokens(model, random.Random(s), how) for s in range(3000)]
            counted = [len(tok.decode(seq)) for seq in drawn]
            for n, p in enumerate(lengths):
                self.assertAlmostEqual(counted.count(n) / 3000, p, delta=0.025)
            self.assertTrue(all(seq[-1] == tok.PAD and tok.PAD not in seq[:-1] for seq in drawn))
            if temperature == 1.0:
                at_one = counted
        self.assertEqual(counted, at_one)  # the same draws: the temperature only shapes letters

    def test_padding_model_places_the_end_first_then_the_letters(self):
        cfg, tok = tiny(padding=True)
        floats = md.as_floats(md.Model.new(cfg, tok).params)

        def ends_by_8(params, cfg, tokens, positions):  # the transformer, nudged to end names
            logits = md.transformer(params, cfg, tokens, positions)
            for lg, i in zip(logits, positions):
                lg[tok.PAD] += 1.5 * (i - 5)
            return logits

        model, ends = md.Model(cfg, tok, floats, ends_by_8), set()
        for seed in range(12):
            trace = []
            how = md.Sampling(steps=20, temperature=0.7)
            seq = md.sample_tokens(model, random.Random(seed), how, trace)
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
            pattern=md.parse_pattern('m_r__', model)), trace)
        self.assertEqual([tokens.count(tok.MASK) for _, _, _, tokens in trace], [2, 1, 0])

    def test_padding_model_length_follows_its_odds_whatever_the_temperature(self):
        cfg, tok = tiny(block_size=6, padding=True)
        n_letters = len(tok.chars)
        ends_by = [0.1, 0.2, 0.2, 0.5, 0.9, 0.95]  # P(PAD at i): the name has ended by i
        # (position 2 says less than position 1: the curve is read as its running maximum)

        def odds(params, cfg, tokens, positions):
            # every letter logit 0; PAD's gives P(PAD) = ends_by[i] while all is masked
            return [[0.0] * n_letters + [0.0, math.log(ends_by[i] / (1 - ends_by[i]) * n_letters)
                                         if tokens.count(tok.MASK) == len(tokens) else 0.0]
                    for i in positions]

        model = md.Model(cfg, tok, None, odds)
        expected = [0.1, 0.1, 0.0, 0.3, 0.4, 0.05, 0.05]  # lengths 0..6 (6: no PAD at all)
        for temperature in (1.0, 0.3):
            how = md.Sampling(temperature=temperature)
            lengths = [len(tok.decode(md.sample_tokens(model, random.Random(s), how)))
                       for s in range(3000)]
            for n, p in enumerate(expected):
                self.assertAlmostEqual(lengths.count(n) / 3000, p, delta=0.025)
            if temperature == 1.0:
                at_one = lengths
        self.assertEqual(lengths, at_one)  # the same draws: the temperature only shapes letters

    def test_pattern_lengths_against_brute_force(self):
        # A stub whose odds at position i depend on i and on the distance to the end, but not
        # on the other letters: then the pattern's probability at length n is a sum over every
        # way to fill its blanks and its '*', which brute force can add up.
        chars = ['a', 'b', 'c']
        tok = md.Tokenizer(chars)
        cfg = md.Config(block_size=6)
        lengths = [0.0, 0.1, 0.15, 0.3, 0.25, 0.2]

        def logits_at(i, n):
            return [math.sin(1.3 * v + 0.7 * i) + 0.4 * v * (n - i) for v in range(3)]

        def odds(params, cfg, tokens, positions):
            return [logits_at(i, len(tokens) - 1) + [0.0, 0.0] for i in positions]

        model = md.Model(cfg, tok, None, odds, lengths)

        def p_letter(i, n, v):
            return math.exp(logits_at(i, n)[v]) / sum(math.exp(x) for x in logits_at(i, n))

        for pattern in ('a*', '*b', 'a*c', '_b*', 'ab*ca', '*'):
            head, tail = md.parse_pattern(pattern, model)
            joint = []
            for n in range(6):
                total = 0.0
                for letters in itertools.product(range(3), repeat=n):
                    name = ''.join(chars[v] for v in letters)
                    front, back = pattern.split('*')
                    fits = len(name) >= len(front) + len(back) and all(
                        c in ('_', d) for c, d in zip(front + back, name[:len(front)]
                                                      + name[len(name) - len(back):]))
                    if fits:
                        total += math.prod(p_letter(i, n, v) for i, v in enumerate(letters))
                joint.append(lengths[n] * total)
            expected = [p / sum(joint) for p in joint]
            got = md.pattern_lengths(model, head, tail)
            for a, b in zip(got, expected):
                self.assertAlmostEqual(a, b, places=12, msg=pattern)

    def test_a_star_anywhere_fills_a_gap_of_any_length(self):
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok, md.length_odds(NAMES, 16))
        for pattern, check in (('ka*', lambda n: n.startswith('ka')),
                               ('*lyn', lambda n: n.endswith('lyn')),
                               ('a*a', lambda n: len(n) >= 2 and n[0] == n[-1] == 'a'),
                               ('m_r*', lambda n: len(n) >= 3 and n[0] == 'm' and n[2] == 'r'),
                               ('*', lambda n: n)):
            names = md.sample(model, 12, seed=1, how=md.Sampling(
                pattern=md.parse_pattern(pattern, model)))
            self.assertTrue(all(map(check, names)), (pattern, names))
            self.assertTrue(all(set(n) <= set(tok.chars) for n in names))
            if pattern != 'ka*':
                continue
            self.assertGreater(len(set(map(len, names))), 1)  # the length is drawn

    def test_an_idle_step_would_change_nothing(self):
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        seq = tok.encode('emma', cfg.block_size)
        seq[1] = seq[2] = seq[9] = tok.MASK
        candidates = [list(range(tok.vocab_size - 2)) + [tok.PAD]] * cfg.block_size
        for remask in ('confidence', 'random'):
            for seed in range(5):
                same = md.reverse_step(model.frozen(), seq, candidates, 3, 0.8, remask,
                                       random.Random(seed))
                self.assertEqual(same, seq)

    def test_never_emits_mask_or_a_letter_after_the_end(self):
        for padding in (False, True):
            cfg, tok = tiny(padding=padding)

            def loves_mask(params, cfg, tokens, positions):
                rng = random.Random(len(positions))
                return [[rng.gauss(0, 1) if v != tok.MASK else 100.0
                         for v in range(tok.vocab_size)] for _ in positions]

            for seed in range(20):
                for remask in ('confidence', 'random'):
                    seq = md.sample_tokens(md.Model(cfg, tok, None, loves_mask),
                                           random.Random(seed), md.Sampling(remask=remask))
                    self.assertNotIn(tok.MASK, seq)
                    end = seq.index(tok.PAD) if tok.PAD in seq else len(seq)
                    self.assertEqual(seq[end:], [tok.PAD] * (len(seq) - end))
                    self.assertEqual(len(seq), 16 if padding else end + 1)

    def test_confidence_keeps_the_surest_guess(self):
        cfg, tok = tiny()
        a, b = tok.ids['a'], tok.ids['b']

        def sure_at_two(params, cfg, tokens, positions):
            # position 2 is certain it is 'a'; every other position is torn between a and b
            return [[20.0 * (v == a) if i == 2 else 1.0 * (v in (a, b))
                     for v in range(tok.vocab_size)] for i in positions]

        seq = [tok.MASK] * cfg.block_size
        candidates = [list(range(tok.vocab_size - 2)) + [tok.PAD]] * cfg.block_size

        def first_kept(remask, temperature, seed):
            after = md.reverse_step(md.Model(cfg, tok, None, sure_at_two), seq, candidates, 15,
                                    temperature, remask, random.Random(seed))
            kept = [i for i, t in enumerate(after) if t != tok.MASK]
            self.assertEqual(len(kept), 1)
            return kept[0]

        # cool: the surest prediction is the one kept, every time
        self.assertEqual({first_kept('confidence', 0.05, s) for s in range(20)}, {2})
        # at temperature 1 the noisy confidence is pure noise: any position may be kept first,
        # exactly as with random re-masking (each about 1 time in 16)
        for remask in ('confidence', 'random'):
            kept = [first_kept(remask, 1.0, s) for s in range(800)]
            self.assertAlmostEqual(kept.count(2) / 800, 1 / 16, delta=0.03)
            self.assertEqual(len(set(kept)), 16)

    def test_draw_samples_the_tempered_softmax(self):
        logits = [1.0, 3.0, 2.0, 0.0]
        rng = random.Random(0)
        self.assertEqual({md.draw(logits, [0, 1, 2, 3], 0.01, rng)[0] for _ in range(50)}, {1})
        token, confidence = md.draw(logits, [0, 2, 3], 0.01, rng)  # 1 is not a candidate
        self.assertEqual(token, 2)
        log_p = 2.0 - math.log(sum(math.exp(x) for x in (1.0, 2.0, 0.0)))
        self.assertAlmostEqual(confidence, log_p, delta=0.1)  # T -> 0: plain log p(token)
        for temperature in (1.0, 0.5):
            many = [md.draw(logits, [0, 1, 2, 3], temperature, rng)[0] for _ in range(6000)]
            weights = [math.exp(x / temperature) for x in logits]
            for token in range(4):
                self.assertAlmostEqual(many.count(token) / 6000, weights[token] / sum(weights),
                                       delta=0.02)

    def test_pattern(self):
        for padding, length in itertools.product((False, True), ('first', 'along')):
            cfg, tok = tiny(padding=padding)
            model = md.Model.new(cfg, tok, md.length_odds(NAMES, 16))
            letters = set(range(len(tok.chars)))
            for pattern in ('m_r__', 'ka*', '_', '*', 'emma'):
                how = md.Sampling(pattern=md.parse_pattern(pattern, model), length=length)
                for seed in range(3):
                    seq = md.sample_tokens(model.frozen(), random.Random(seed), how)
                    name = tok.decode(seq)
                    body = pattern.rstrip('*')
                    for i, c in enumerate(body):
                        self.assertIn(seq[i], letters)  # '_' is a letter, never the end
                        if c != '_':
                            self.assertEqual(name[i], c)  # fixed letters never change
                    if not pattern.endswith('*'):
                        self.assertEqual(len(name), len(body))
                    self.assertNotIn(tok.MASK, seq)

    def test_bad_patterns(self):
        cfg, tok = tiny()
        model, padded = md.Model(cfg, tok, None), md.Model(tiny(padding=True)[0], tok, None)
        for pattern, which, message in (('a' * 16, model, 'at most 15'),
                                        ('a' * 17, padded, 'at most 16'),
                                        ('ka*a*', model, 'only once'),
                                        ('ka*a', padded, 'only come last'),
                                        ('e9_', model, "'9' not in the vocabulary"),
                                        ('', model, 'empty')):
            with self.assertRaisesRegex(ValueError, message):
                md.parse_pattern(pattern, which)
        self.assertEqual(md.parse_pattern('a_*b', model), ([0, tok.MASK], [1]))
        self.assertEqual(md.parse_pattern('a_b', model), ([0, tok.MASK, 1], None))


class GPTTest(unittest.TestCase):
    """The same transformer, causal, trained on the next token; its loss is the exact -log p."""

    def test_uniform_logits_give_n_plus_one_times_log_v(self):
        cfg, tok = tiny(model='gpt')
        uniform = md.Model(cfg, tok, None, UniformDenoiser(tok.vocab_size))
        for name in ('ava', 'isabella', 'a'):
            # it predicts n letters and the end, each one of V = letters + PAD (never MASK)
            expected = (len(name) + 1) * math.log(len(tok.chars) + 1)
            self.assertAlmostEqual(md.gpt_loss(uniform, tok.encode(name, cfg.block_size)),
                                   expected, places=12)

    def test_causal_attention_reads_only_leftwards(self):
        cfg, tok = tiny(model='gpt')
        model = md.Model.new(cfg, tok).frozen()
        a = [tok.MASK] + tok.encode('emma', 4)
        b = [tok.MASK] + tok.encode('emmy', 4)  # the same start, another last letter
        la, lb = model.logits(a, range(5)), model.logits(b, range(5))
        self.assertEqual(la[:4], lb[:4])              # positions before the change never see it
        self.assertNotEqual(la[4], lb[4])
        diffusion = md.Model(md.Config(), tok, model.params)  # bidirectional: everyone sees it
        self.assertNotEqual(diffusion.logits(a, [0]), diffusion.logits(b, [0]))

    def test_gradient_matches_finite_differences(self):
        cfg, tok = tiny(model='gpt')
        model = md.Model.new(cfg, tok)
        tokens = tok.encode('jacob', cfg.block_size)
        md.gpt_loss(model, tokens).backward()
        floats = md.as_floats(model.params)
        rng = random.Random(1)
        for name in sorted(model.params):
            rows = floats[name]
            for _ in range(2):
                i, j = rng.randrange(len(rows)), rng.randrange(len(rows[0]))
                original = rows[i][j]
                rows[i][j] = original + 1e-6
                up = md.gpt_loss(md.Model(cfg, tok, floats), tokens)
                rows[i][j] = original - 1e-6
                down = md.gpt_loss(md.Model(cfg, tok, floats), tokens)
                rows[i][j] = original
                grad, numeric = model.params[name][i][j].grad, (up - down) / 2e-6
                self.assertTrue(math.isclose(grad, numeric, rel_tol=1e-4, abs_tol=1e-8),
                                f'{name}[{i}][{j}]: backward {grad}, numeric {numeric}')

    def test_sampling_goes_left_to_right_and_stops_at_the_end(self):
        cfg, tok = smaller(model='gpt')
        model = md.Model.new(cfg, tok).frozen()
        for seed in range(10):
            trace = []
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
        with self.assertRaisesRegex(ValueError, 'a GPT reads left to right'):
            md.parse_pattern('k_a*', model)

    def test_left_to_right_nll_of_a_diffusion_model(self):
        for padding in (False, True):
            cfg, tok = tiny(padding=padding)
            seen = []

            def recording(params, cfg, tokens, positions):
                seen.append((list(tokens), list(positions)))
                return [[0.0] * tok.vocab_size for _ in positions]
            model = md.Model(cfg, tok, None, recording)
            tokens = model.encode('ava')
            md.left_to_right_nll(model, tokens)
            erasable = md.erasable(model, tokens)
            self.assertEqual(len(seen), len(erasable))
            for i, (noisy, positions) in enumerate(seen):  # i, those before it visible
                self.assertEqual(positions, [i])
                self.assertEqual(noisy, tokens[:i] + [tok.MASK] * (len(erasable) - i)
                                 + tokens[len(erasable):])  # the end stays visible
            model = md.Model.new(cfg, tok).frozen()
            how = md.Sampling(order='left-to-right')
            for seed in range(5):
                seq = md.sample_tokens(model, random.Random(seed), how)
                self.assertNotIn(tok.MASK, seq)
                self.assertEqual(seq, model.encode(tok.decode(seq)))


class TextTest(unittest.TestCase):
    """Running text: windows with no end, and writing past one block."""

    TEXT = 'the cat sat on the mat.\nthe dog sat on the log.\n' * 4

    def model(self, **changes):
        cfg = md.Config(text=True, block_size=8, n_embd=8, n_head=2, **changes)
        return md.Model.new(cfg, md.Tokenizer.from_names(self.TEXT))

    def test_windows_are_drawn_from_the_text_by_step(self):
        model = self.model(batch_size=5)
        batches = md.Batches(self.TEXT, model.cfg)
        windows = batches.at(3)
        self.assertEqual(len(windows), 5)
        self.assertTrue(all(len(w) == 8 and w in self.TEXT for w in windows))
        self.assertEqual(md.Batches(self.TEXT, model.cfg).at(3), windows)  # from the step alone
        self.assertNotEqual(batches.at(4), windows)
        self.assertIn('\n', ''.join(batches.at(s)[0] for s in range(20)))  # newlines are text

    def test_a_window_has_no_end_and_no_length(self):
        for kind in ('diffusion', 'gpt'):
            model = self.model(model=kind)
            tok, tokens = model.tok, model.encode('the cat.')
            self.assertEqual(tokens, [tok.ids[c] for c in 'the cat.'])  # no PAD
            self.assertEqual(model.outputs, list(range(len(tok.chars))))
            self.assertIsNone(model.lengths)
            self.assertEqual(md.erasable(model, tokens), list(range(8)))
            self.assertEqual(md.length_nll(model, tokens), 0.0)
            uniform = md.Model(model.cfg, tok, None, UniformDenoiser(tok.vocab_size))
            expected = 8 * math.log(len(tok.chars))  # each character one of the characters
            score = (md.gpt_loss(uniform, tokens) if kind == 'gpt' else
                     md.nelbo(uniform, tokens, random.Random(0)))
            self.assertAlmostEqual(score, expected, places=9)

    def test_writing_block_after_block(self):
        # the prompt's last `context` characters are seen (at most 7: a block of 8 writes one)
        for kind, context, first_two in (('diffusion', 3, [5, 5]), ('gpt', 7, [4, 1]),
                                         ('diffusion', 50, [4, 1])):
            model = self.model(model=kind).frozen()
            tok = model.tok
            prompt = [tok.ids[c] for c in 'the ']
            blocks = list(md.write(model, prompt, 13, random.Random(1), md.Sampling(), context,
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


if __name__ == '__main__':
    unittest.main()
