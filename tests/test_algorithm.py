"""The lesson, microdiffusion.py: tokenizer and p(length), the transformer, the noise and the
loss, the ELBO, the sampler, Adam and the plain training loop."""

import itertools
import math
import os
import random
import statistics
import tempfile
import unittest

import microdiffusion as md
from value import Value

from . import NAMES, SHORT_NAMES, Uniform, mean_nelbo, stub, tiny, trained


def float_loss(model, float_params, tokens, seed, t=0.5):
    floats = type(model)(model.cfg, model.tok, float_params, model.lengths)
    return md.diffusion_loss(floats, tokens, t, random.Random(seed))


def assert_gradients_match(test, model, loss_of, picks, rel_tol=1e-4):
    """Each picked parameter's gradient from backward() against central differences of
    loss_of(a model on floats); loss_of(model) is the same loss on Values."""
    loss_of(model).backward()
    floats = md.as_floats(model.params)
    for name, i, j in picks:
        original = floats[name][i][j]
        floats[name][i][j] = original + 1e-6
        up = loss_of(type(model)(model.cfg, model.tok, floats, model.lengths))
        floats[name][i][j] = original - 1e-6
        down = loss_of(type(model)(model.cfg, model.tok, floats, model.lengths))
        floats[name][i][j] = original
        grad, numeric = model.params[name][i][j].grad, (up - down) / 2e-6
        test.assertTrue(math.isclose(grad, numeric, rel_tol=rel_tol, abs_tol=1e-8),
                        f'{name}[{i}][{j}]: backward {grad}, numeric {numeric}')


def random_picks(params, per_matrix, seed):
    rng = random.Random(seed)
    return [(name, rng.randrange(len(params[name])), rng.randrange(len(params[name][0])))
            for name in sorted(params) for _ in range(per_matrix)]


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
                f.write('\ufeff  emma \n\n\t\nzoë\r\no\'neil\rava\n\ufeffmia')
            self.assertEqual(md.load_names(path), ['emma', 'zoë', "o'neil", 'ava', 'mia'])

    def test_batches_cover_each_epoch_once(self):
        cfg = md.Config(batch_size=4, seed=1)
        batches = md.Batches(NAMES, cfg)
        epoch = [name for step in range(len(NAMES) // 4) for name in batches.at(step)]
        self.assertEqual(sorted(epoch), sorted(NAMES))
        self.assertNotEqual(epoch, NAMES)
        self.assertEqual(md.Batches(NAMES, cfg).at(13), batches.at(13))
        self.assertNotEqual(md.Batches(NAMES, md.Config(batch_size=4, seed=2)).at(0),
                            batches.at(0))

    def test_length_histogram_is_counted_and_smoothed(self):
        odds = md.length_odds(['ab', 'cd', 'efg'], 6)
        self.assertEqual(len(odds), 6)
        # counts 0, 0, 2, 1, 0, 0 plus one for every length from 1 to 5: 0, 1, 3, 2, 1, 1
        self.assertEqual(odds, [0.0, 1 / 8, 3 / 8, 2 / 8, 1 / 8, 1 / 8])
        self.assertAlmostEqual(sum(md.length_odds(NAMES, 16)), 1.0, places=12)
        self.assertTrue(all(p > 0 for p in md.length_odds(NAMES, 16)[1:]))
        with self.assertRaisesRegex(ValueError, 'an empty name'):
            md.length_odds(['ab', ''], 6)


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

    def test_a_head_takes_its_share_of_the_numbers(self):
        cfg, tok = tiny(n_embd=12, n_head=5)
        with self.assertRaisesRegex(ValueError, 'n_embd 12 is not a multiple of n_head 5'):
            md.Model.new(cfg, tok)

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
        tokens = model.encode('isabella')
        loss = md.diffusion_loss(model, tokens, 0.5, random.Random(3))
        self.assertEqual(float_loss(model, md.as_floats(model.params), tokens, 3), loss.data)
        picks = [('wte', tok.ids['a'], 3),   # embeds an input letter and scores it
                 ('wte', tok.PAD, 0),        # PAD: the end, an input only
                 ('wte', tok.ids['y'], 5),   # not in the name: reached only as an output
                 ('wte', tok.MASK, 7)]       # MASK: reached only as an input
        assert_gradients_match(self, model, lambda m: md.diffusion_loss(
            m, tokens, 0.5, random.Random(3)), picks + random_picks(model.params, 3, 0))
        self.assertNotEqual(model.params['wte'][tok.MASK][7].grad, 0.0)

    def test_training_gradient_with_a_tape_is_the_searched_one(self):
        # name_gradient (training) records the graph on a Tape; backward() searches for it
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        values = md.flatten(model.params)
        tokens = model.encode('isabella')
        loss, taped = md.name_gradient(model, values, (tokens, 0.5, 3))
        self.assertTrue(all(v.grad == 0.0 for v in values))  # handed over, and reset
        searched = md.diffusion_loss(model, tokens, 0.5, random.Random(3))
        searched.backward()
        self.assertEqual(searched.data, loss)
        self.assertGreater(sum(1 for g in taped if g), len(values) // 2)
        for v, g in zip(values, taped):
            self.assertTrue(math.isclose(v.grad, g, rel_tol=1e-12, abs_tol=1e-15))

    def test_floats_and_values_give_the_same_logits(self):
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok)
        tokens = tok.encode('mia', cfg.block_size)
        tokens[1] = tokens[6] = tok.MASK
        with_graph = model.logits(tokens, [1, 6])
        frozen = model.frozen()
        without = frozen.logits(tokens, [1, 6])
        self.assertIs(type(frozen), md.Model)
        self.assertEqual([[v.data for v in lg] for lg in with_graph], without)
        self.assertEqual(len(without), 2)
        self.assertEqual(len(without[0]), tok.vocab_size)
        self.assertIsInstance(without[0][0], float)
        # asking for fewer positions does not change the logits at the ones asked for
        self.assertEqual(frozen.logits(tokens, [6])[0], without[1])

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

    def test_causal_attention_reads_only_leftwards(self):
        cfg, tok = tiny()
        params = md.as_floats(md.Model.new(cfg, tok).params)
        a, b = tok.encode('emma', 5), tok.encode('emmy', 5)  # the same start, another letter
        la = md.transformer(params, cfg, a, range(5), causal=True)
        lb = md.transformer(params, cfg, b, range(5), causal=True)
        self.assertEqual(la[:3], lb[:3])  # positions before the change never see it
        self.assertNotEqual(la[3], lb[3])
        both_ways = [md.transformer(params, cfg, x, [0]) for x in (a, b)]
        self.assertNotEqual(*both_ways)  # the lesson's attention: every position sees it


class DiffusionTest(unittest.TestCase):
    """The forward process, the loss and the ELBO."""

    def test_erase_at_a_noise_level(self):
        rng, positions = random.Random(0), list(range(16))
        self.assertEqual(md.erase(positions, 0.0, rng), [])
        self.assertEqual(md.erase(positions, 1.0, rng), positions)
        erased = sum(len(md.erase(positions, 0.3, rng)) for _ in range(2000))
        self.assertAlmostEqual(erased / (16 * 2000), 0.3, delta=0.01)

    def test_a_name_is_its_letters_and_its_end(self):
        cfg, tok = tiny()
        model = md.Model(cfg, tok, None)
        self.assertEqual(model.encode('emma'), tok.encode('emma', 5))
        self.assertEqual(model.erasable(model.encode('emma')), [0, 1, 2, 3])  # not the end
        self.assertEqual(model.outputs, list(range(len(tok.chars))))  # letters: no MASK, PAD
        self.assertEqual(model.longest(cfg), 15)

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

    def test_mask_is_never_a_prediction(self):
        logits = [0.3, -1.0, 50.0, 9.0, 0.7]  # MASK = 3 and PAD = 4 of a 3-letter vocabulary
        for outputs in ([0, 1, 2], [0, 1, 2, 4]):
            nll = md.token_nll(logits, 1, outputs)
            expected = math.log(sum(math.exp(logits[v]) for v in outputs)) + 1.0
            self.assertAlmostEqual(nll, expected, places=12)

    def test_loss_scores_only_the_erased_letters(self):
        cfg, tok = tiny()
        model, seen = recording(cfg, tok)
        tokens = model.encode('emma')
        loss = md.diffusion_loss(model, tokens, 0.7, random.Random(4))
        noisy, positions = seen[0]
        self.assertEqual(positions, [i for i, t in enumerate(noisy) if t == tok.MASK])
        self.assertTrue(positions)
        self.assertTrue(set(positions) <= {0, 1, 2, 3})
        self.assertEqual(noisy[-1], tok.PAD)  # the end is never erased
        for i, t in enumerate(noisy):
            self.assertIn(t, (tokens[i], tok.MASK))
        # each erased letter costs log(letters) here, times log(1 / t_min), times the chance
        # that a mask is not empty (see diffusion_loss)
        kept = 1 - (1 - 0.7) ** 4
        self.assertAlmostEqual(loss, len(positions) * math.log(len(tok.chars))
                               * math.log(1 / cfg.t_min) * kept, places=9)

    def test_loss_estimates_the_nelbo_from_t_min_up(self):
        # For a model that knows nothing, each erased letter costs log(V), V the outputs, so
        # the NELBO's share from noise levels t_min..1 is the integral of 1/t · L·t · log(V) dt:
        # (1 - t_min) · L · log(V), L the erasable positions. The loss, averaged over
        # log-uniform t, must match it, however few positions there are.
        for name in ('ava', 'a'):
            cfg, tok = tiny()
            model = stub(md.Model, Uniform(tok.vocab_size), cfg, tok)
            tokens, rng = model.encode(name), random.Random(5)
            losses = [md.diffusion_loss(model, tokens, t, rng)
                      for t in md.noise_levels(rng, cfg.t_min, 20000)]
            share = (1 - cfg.t_min) * len(name) * math.log(len(tok.chars))
            self.assertAlmostEqual(statistics.fmean(losses) / share, 1.0, delta=0.02)

    def test_nelbo_of_a_model_that_knows_nothing(self):
        cfg, tok = tiny()
        uniform = Uniform(tok.vocab_size)
        model = stub(md.Model, uniform, cfg, tok, md.length_odds(NAMES, cfg.block_size))
        tokens = model.encode('ava')
        # -log p(3), then 3 letters, each one of the letters
        expected = -math.log(md.length_odds(NAMES, 16)[3]) + 3 * math.log(len(tok.chars))
        for seed in range(3):
            self.assertAlmostEqual(md.nelbo(model, tokens, random.Random(seed)), expected,
                                   places=9)
            self.assertAlmostEqual(md.nelbo_one_pass(model, tokens, random.Random(seed)),
                                   expected, places=9)
            self.assertAlmostEqual(md.left_to_right_nll(model, tokens), expected, places=9)
        self.assertEqual(uniform.calls, 3 * 3 + 3 + 3 * 3)  # L passes, 1, L passes

    def test_nelbo_estimates_average_to_the_exact_sum_over_subsets(self):
        # A stub whose odds depend on what is masked and what is visible, so every subset
        # counts differently. The exact NELBO is -log p(length) plus every subset M of the L
        # erasable positions with weight 1/k / C(L, k), k = |M|. nelbo() averaged over all
        # L! orders, and nelbo_one_pass() over every (k, M) it can draw, must equal it.
        cfg, tok = tiny(block_size=5)
        model = stub(md.Model, lambda tokens, positions: odds(tok, tokens, positions), cfg, tok,
                     md.length_odds(['evan', 'eve', 'al'], 5))
        tokens = model.encode('evan')
        positions = model.erasable(tokens)
        exact = exact_nelbo(model, tokens)
        orders = list(itertools.permutations(positions))
        by_orders = sum(md.nelbo(model, tokens, Fixed(0, order)) for order in orders)
        self.assertAlmostEqual(by_orders / len(orders), exact, places=9)
        one_pass = sum(md.nelbo_one_pass(model, tokens, Fixed(k, subset)) / 4 / math.comb(4, k)
                       for k in range(1, 5) for subset in itertools.combinations(positions, k))
        self.assertAlmostEqual(one_pass, exact, places=9)
        self.assertEqual(model.length_nll(tokens), -math.log(2 / 7))  # 'evan': 1 + 1 of 7
        uniform = stub(md.Model, Uniform(tok.vocab_size), cfg, tok, model.lengths)
        self.assertNotAlmostEqual(exact, md.nelbo(uniform, tokens, random.Random(0)), 2)

    def test_a_trained_model_explains_names_far_better_than_chance(self):
        model, before = trained()
        names = SHORT_NAMES[:24]
        after = mean_nelbo(model, names)
        uniform = statistics.fmean(  # -log p(length) + each letter one of the letters
            model.length_nll(model.encode(n)) + len(n) * math.log(len(model.tok.chars))
            for n in names)
        self.assertAlmostEqual(before, uniform, delta=0.5)  # untrained: near uniform guessing
        # ln(26) = 3.3 nats a letter for guessing; 60 steps learn the common letters
        self.assertLess(after, uniform - 3.0, f'NELBO {uniform:.2f} -> {after:.2f}')


def recording(cfg, tok):
    """(a model that knows nothing, the list of (tokens, positions) it is asked about)."""
    seen = []

    def logits(tokens, positions):
        seen.append((list(tokens), list(positions)))
        return [[0.0] * tok.vocab_size for _ in positions]
    return stub(md.Model, logits, cfg, tok), seen


def odds(tok, tokens, positions):
    """Logits that depend on the position, on how much is masked, and on what is seen."""
    hidden = sum(1 for t in tokens if t == tok.MASK)
    seen = sum(t for t in tokens if t != tok.MASK)
    return [[math.sin(1.7 * v + 0.9 * i + 0.6 * hidden + 0.13 * seen)
             for v in range(tok.vocab_size)] for i in positions]


def exact_nelbo(model, tokens):
    """-log p(length) and every subset of the erasable positions, weighed 1/k / C(L, k)."""
    positions = model.erasable(tokens)
    L = len(positions)
    return model.length_nll(tokens) + sum(
        md.erased_nll(model, tokens, list(subset)) / k / math.comb(L, k)
        for k in range(1, L + 1) for subset in itertools.combinations(positions, k))


class Fixed:
    """A random generator that draws what it is told to."""

    def __init__(self, k, picks):
        self.k, self.picks = k, list(picks)

    def sample(self, population, count):
        return self.picks[:count]

    def randint(self, low, high):
        return self.k


class SamplerTest(unittest.TestCase):

    def test_schedule(self):
        counts = md.masked_counts(16, 64)
        self.assertEqual((counts[64], counts[0]), (16, 0))
        self.assertTrue(all(a <= b for a, b in zip(counts, counts[1:])))
        for i in (10, 32, 50):
            self.assertEqual(counts[i], round(16 * math.cos(math.pi / 2 * (1 - i / 64))))

    def test_follows_the_schedule_and_skips_idle_steps(self):
        calls = []
        cfg, tok = tiny()
        params = md.as_floats(md.Model.new(cfg, tok).params)

        def counting(tokens, positions):
            calls.append(len(positions))
            return md.transformer(params, cfg, tokens, positions)

        counted = stub(md.Model, counting, cfg, tok, md.length_odds(NAMES, 16))
        for steps in (64, 10, 3):
            calls.clear()
            trace, how = [], md.Sampling(steps=steps, loop_passes=0)  # the schedule alone
            seq = md.sample_tokens(counted, random.Random(steps), how, trace)
            n = len(tok.decode(seq))  # the length, drawn first: its blanks, then the end
            self.assertEqual(trace.pop(0), (steps, 1.0, 1.0, [tok.MASK] * n + [tok.PAD]))
            counts = md.masked_counts(n, steps)
            decisive = [i for i in range(steps, 0, -1) if counts[i - 1] != counts[i]]
            self.assertEqual([entry[0] for entry in trace], decisive)
            for i, t, T, tokens in trace:
                self.assertEqual(tokens.count(tok.MASK), counts[i - 1])
                self.assertAlmostEqual(T, how.temperature * (how.temp_end + (
                    how.temp_start - how.temp_end) * t))
            self.assertEqual(calls, [counts[i] for i in decisive])  # one pass a step
            self.assertNotIn(tok.MASK, seq)
            self.assertEqual(len(seq), n + 1)

    def test_length_first_draws_from_p_length_whatever_the_temperature(self):
        cfg, tok = tiny(block_size=6)
        lengths = [0.0, 0.1, 0.2, 0.3, 0.4, 0.0]
        model = stub(md.Model, Uniform(tok.vocab_size), cfg, tok, lengths)
        for temperature in (1.0, 0.3):
            how = md.Sampling(temperature=temperature, loop_passes=0)  # (lengths: no loop)
            drawn = [md.sample_tokens(model, random.Random(s), how) for s in range(3000)]
            counted = [len(tok.decode(seq)) for seq in drawn]
            for n, p in enumerate(lengths):
                self.assertAlmostEqual(counted.count(n) / 3000, p, delta=0.025)
            self.assertTrue(all(seq[-1] == tok.PAD and tok.PAD not in seq[:-1] for seq in drawn))
            if temperature == 1.0:
                at_one = counted
        self.assertEqual(counted, at_one)  # the same draws: the temperature only shapes letters

    def test_pattern_lengths_against_brute_force(self):
        # A stub whose odds at position i depend on i and on the distance to the end, but not
        # on the other letters: then the pattern's probability at length n is a sum over every
        # way to fill its blanks and its '*', which brute force can add up.
        chars = ['a', 'b', 'c']
        tok = md.Tokenizer(chars)
        lengths = [0.0, 0.1, 0.15, 0.3, 0.25, 0.2]

        def logits_at(i, n):
            return [math.sin(1.3 * v + 0.7 * i) + 0.4 * v * (n - i) for v in range(3)]

        model = stub(md.Model, lambda tokens, positions: [
            logits_at(i, len(tokens) - 1) + [0.0, 0.0] for i in positions],
            md.Config(block_size=6), tok, lengths)

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
        model = md.Model.new(cfg, tok, NAMES)
        for pattern, check in (('ka*', lambda n: n.startswith('ka')),
                               ('*lyn', lambda n: n.endswith('lyn')),
                               ('a*a', lambda n: len(n) >= 2 and n[0] == n[-1] == 'a'),
                               ('m_r*', lambda n: len(n) >= 3 and n[0] == 'm' and n[2] == 'r'),
                               ('*', lambda n: n)):
            names = md.sample(model, 12, seed=1, how=md.Sampling(
                pattern=md.parse_pattern(pattern, model), loop_passes=2))
            self.assertTrue(all(map(check, names)), (pattern, names))
            self.assertTrue(all(set(n) <= set(tok.chars) for n in names))
            if pattern == 'ka*':
                self.assertGreater(len(set(map(len, names))), 1)  # the length is drawn

    def test_a_pattern_of_fixed_letters_keeps_them(self):
        cfg, tok = tiny()
        model = md.Model.new(cfg, tok, NAMES)
        for pattern in ('m_r__', 'ka*', '_', '*', 'emma'):
            how = md.Sampling(pattern=md.parse_pattern(pattern, model))
            for seed in range(3):
                seq = md.sample_tokens(model.frozen(), random.Random(seed), how)
                name, body = tok.decode(seq), pattern.rstrip('*')
                for i, c in enumerate(body):
                    self.assertLess(seq[i], len(tok.chars))  # '_' is a letter, never the end
                    if c != '_':
                        self.assertEqual(name[i], c)  # fixed letters never change
                if not pattern.endswith('*'):
                    self.assertEqual(len(name), len(body))
                self.assertNotIn(tok.MASK, seq)

    def test_bad_patterns(self):
        cfg, tok = tiny()
        model = md.Model(cfg, tok, None)
        for pattern, message in (('a' * 16, 'at most 15'), ('ka*a*', 'only once'),
                                 ('e9_', "'9' not in the vocabulary"), ('', 'empty')):
            with self.assertRaisesRegex(ValueError, message):
                md.parse_pattern(pattern, model)
        self.assertEqual(md.parse_pattern('a_*b', model), ([0, tok.MASK], [1]))
        self.assertEqual(md.parse_pattern('a_b', model), ([0, tok.MASK, 1], None))

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

    def test_never_emits_mask_or_the_end_among_the_letters(self):
        cfg, tok = tiny()

        def loves_mask_and_pad(tokens, positions):
            rng = random.Random(len(positions))
            return [[rng.gauss(0, 1) if v < len(tok.chars) else 100.0
                     for v in range(tok.vocab_size)] for _ in positions]

        model = stub(md.Model, loves_mask_and_pad, cfg, tok)
        for seed in range(20):
            for how in (md.Sampling(remask='confidence'), md.Sampling(remask='random'),
                        md.Sampling(order='left-to-right')):
                seq = md.sample_tokens(model, random.Random(seed), how)
                self.assertNotIn(tok.MASK, seq)
                self.assertEqual(seq[-1], tok.PAD)
                self.assertNotIn(tok.PAD, seq[:-1])

    def test_confidence_keeps_the_surest_guess(self):
        cfg, tok = tiny()
        a, b = tok.ids['a'], tok.ids['b']

        def sure_at_two(tokens, positions):
            # position 2 is certain it is 'a'; every other position is torn between a and b
            return [[20.0 * (v == a) if i == 2 else 1.0 * (v in (a, b))
                     for v in range(tok.vocab_size)] for i in positions]

        seq = [tok.MASK] * cfg.block_size
        candidates = [list(range(tok.vocab_size - 2)) + [tok.PAD]] * cfg.block_size
        model = stub(md.Model, sure_at_two, cfg, tok)

        def first_kept(remask, temperature, seed):
            after = md.reverse_step(model, seq, candidates, 15, temperature, remask,
                                    random.Random(seed))
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

    def test_left_to_right_unmasks_one_position_after_another(self):
        cfg, tok = tiny()
        model, seen = recording(cfg, tok)
        tokens = model.encode('ava')
        md.left_to_right_nll(model, tokens)
        for i, (noisy, positions) in enumerate(seen):  # i, those before it visible
            self.assertEqual(positions, [i])
            self.assertEqual(noisy, tokens[:i] + [tok.MASK] * (3 - i) + [tok.PAD])
        model = md.Model.new(cfg, tok).frozen()
        for seed in range(5):
            trace = []
            seq = md.sample_tokens(model, random.Random(seed), md.Sampling(
                order='left-to-right'), trace)
            n = len(tok.decode(seq))
            self.assertEqual(seq, model.encode(tok.decode(seq)))
            self.assertEqual([step for step, *_ in trace], [4] + list(range(1, n + 1)))
            for k, (_, _, _, state) in enumerate(trace[1:], start=1):  # a position a step
                self.assertEqual(state[:k], seq[:k])
                self.assertEqual(state[k:n], [tok.MASK] * (n - k))

    def test_the_loop_re_masks_decided_letters_and_predicts_them_again(self):
        cfg, tok = tiny()
        calls = []

        def counting(tokens, positions):
            calls.append(list(tokens))
            return [[math.sin(v + i) for v in range(tok.vocab_size)] for i in positions]
        model = stub(md.Model, counting, cfg, tok)
        for remask in (1, 3):
            how = md.Sampling(steps=4, loop_passes=5, loop_at=2, loop_remask=remask,
                              pattern=md.parse_pattern('k______a', model))
            calls.clear()
            trace = []
            seq = md.sample_tokens(model, random.Random(remask), how, trace)
            schedule = [i for i in range(4, 0, -1)
                        if md.masked_counts(6, 4)[i - 1] != md.masked_counts(6, 4)[i]]
            self.assertEqual(len(calls), len(schedule) + 5)  # the loop's passes: 5 more
            self.assertEqual(len(trace), len(schedule) + 5)
            first = next(k for k, (i, *_) in enumerate(trace) if md.masked_counts(6, 4)[i - 1] <= 2)
            masked = trace[first][3].count(tok.MASK)
            for k in range(first + 1, first + 6):  # each pass: `remask` put back, as many left
                before, after = calls[k], trace[k][3]
                self.assertEqual(before.count(tok.MASK), masked + remask)
                self.assertEqual(after.count(tok.MASK), masked)
                self.assertEqual((before[0], before[7]), (tok.ids['k'], tok.ids['a']))
                self.assertEqual(trace[k][2], how.temperature * how.loop_temperature)
            self.assertEqual(tok.decode(seq)[::7], 'ka')  # the pattern's letters, kept
            self.assertNotIn(tok.MASK, seq)

    def test_sample_is_the_same_whoever_asks(self):
        model, _ = trained()
        first = md.sample(model, 5, seed=3)
        self.assertEqual(md.sample(model, 5, seed=3), first)
        self.assertNotEqual(md.sample(model, 5, seed=4), first)
        self.assertTrue(all(name and set(name) <= set(model.tok.chars) for name in first))


if __name__ == '__main__':
    unittest.main()
