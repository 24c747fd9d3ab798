"""The autograd engine: every operation's value and gradient, and whole graphs."""

import math
import unittest

from value import (Tape, Value, dot, exp, log, logsumexp, matmul, reference_matmul, relu,
                   relu_matmul, softmax_average, topological_order, vsum)


def central_difference(f, xs, i, h=1e-6):
    """d f / d xs[i] by central differences, f a function of a list of floats."""
    up, down = list(xs), list(xs)
    up[i] += h
    down[i] -= h
    return (f(up) - f(down)) / (2 * h)


class GradientCheck(unittest.TestCase):

    def assert_gradients(self, f, points, rel=1e-5, abs_tol=1e-7):
        """f takes a list of Values and returns one Value. At each point, the gradients from
        backward() must match central differences of f's data, and so must those from
        backward(tape), the graph recorded on a Tape."""
        for xs in points:
            leaves = [Value(x) for x in xs]
            f(leaves).backward()
            taped = [Value(x) for x in xs]
            with Tape() as tape:
                result = f(taped)
            result.backward(tape)
            for i, (leaf, twin) in enumerate(zip(leaves, taped)):
                expected = central_difference(lambda zs: f([Value(z) for z in zs]).data, xs, i)
                self.assertTrue(math.isclose(leaf.grad, expected, rel_tol=rel, abs_tol=abs_tol),
                                f'd/dx{i} at {xs}: backward {leaf.grad}, numeric {expected}')
                self.assertTrue(math.isclose(twin.grad, leaf.grad, rel_tol=1e-12, abs_tol=1e-15),
                                f'd/dx{i} at {xs}: with a tape {twin.grad}, without {leaf.grad}')


class OperationsTest(GradientCheck):
    """Each operation against plain arithmetic, and its gradient against finite differences at
    negative, near-zero and positive inputs (wherever the operation is defined and smooth)."""

    pairs = [(-2.3, 0.7), (-0.4, -1.9), (1e-3, 3.1), (-1e-3, 0.25), (5.0, -0.002)]
    singles = [[-2.3], [-0.4], [-1e-3], [1e-3], [0.7], [3.1]]
    positives = [[1e-3], [0.25], [0.7], [3.1]]

    def test_add_sub_mul(self):
        self.assertEqual((Value(2.0) + Value(3.5)).data, 5.5)
        self.assertEqual((Value(2.0) - 3.5).data, -1.5)
        self.assertEqual((4.0 - Value(1.5)).data, 2.5)
        self.assertEqual((Value(2.0) * Value(-3.0)).data, -6.0)
        self.assertEqual((3 * Value(2.0)).data, 6.0)
        self.assertEqual((-Value(2.0)).data, -2.0)
        self.assert_gradients(lambda v: v[0] + v[1], self.pairs)
        self.assert_gradients(lambda v: v[0] - v[1], self.pairs)
        self.assert_gradients(lambda v: v[0] * v[1], self.pairs)
        self.assert_gradients(lambda v: 2.5 - v[0] * 3 + 1 + v[1] * -0.5, self.pairs)
        self.assert_gradients(lambda v: -v[0], self.singles)

    def test_division(self):
        self.assertAlmostEqual((Value(1.0) / Value(4.0)).data, 0.25)
        self.assertAlmostEqual((1.0 / Value(4.0)).data, 0.25)
        self.assert_gradients(lambda v: v[0] / v[1], self.pairs, rel=1e-4)
        self.assert_gradients(lambda v: 3.0 / v[0], [[-2.3], [0.05], [0.7], [3.1]], rel=1e-4)

    def test_power(self):
        self.assertAlmostEqual((Value(3.0) ** 2).data, 9.0)
        for k in (2, 3, -1, -2):
            self.assert_gradients(lambda v: v[0] ** k, [[-2.3], [-0.4], [0.05], [3.1]], rel=1e-4)
        for k in (0.5, -0.5, 1.5):
            self.assert_gradients(lambda v: v[0] ** k, [[0.01], [0.7], [3.1]], rel=1e-4)

    def test_exp_log_relu(self):
        self.assertAlmostEqual(Value(1.3).exp().data, math.exp(1.3))
        self.assertAlmostEqual(Value(1.3).log().data, math.log(1.3))
        self.assertEqual(Value(-2.0).relu().data, 0.0)
        self.assertEqual(Value(2.0).relu().data, 2.0)
        self.assert_gradients(lambda v: v[0].exp(), self.singles)
        self.assert_gradients(lambda v: v[0].log(), self.positives, rel=1e-4)
        self.assert_gradients(lambda v: v[0].relu(), self.singles)  # no input sits on the kink

    def test_helpers_take_values_and_floats(self):
        for fn, x in ((exp, 0.3), (log, 0.3), (relu, -0.3), (relu, 0.3)):
            as_value = fn(Value(x))
            as_float = fn(x)
            self.assertIsInstance(as_value, Value)
            self.assertIsInstance(as_float, float)
            self.assertEqual(as_value.data, as_float)

    def test_vsum_is_one_node(self):
        xs = [Value(x) for x in (1.0, -2.0, 0.5)]
        total = vsum(xs)
        self.assertEqual(total.data, -0.5)
        self.assertEqual(len(total._children), 3)
        self.assertTrue(all(child in xs for child in total._children))
        self.assertEqual(vsum([1.0, 2.5]), 3.5)
        self.assertEqual(vsum([]), 0.0)
        self.assert_gradients(lambda v: vsum(v) * vsum(v[1:]), [[-2.3, 0.4, 1e-3, 7.0]])

    def test_dot_is_one_node(self):
        ws, xs = [Value(1.0), Value(-2.0)], [Value(3.0), Value(0.5)]
        d = dot(ws, xs)
        self.assertEqual(d.data, 2.0)
        self.assertEqual(len(d._children), 4)
        self.assertEqual(dot([1.0, 2.0], [3.0, 4.0]), 11.0)
        self.assert_gradients(lambda v: dot(v[:3], v[3:]), [[-2.3, 0.4, 1e-3, 7.0, -0.1, 2.2]])
        # constants on one side get no edges; the Values still get their gradients
        self.assert_gradients(lambda v: dot([0.5, -3.0], v), [[1.2, -0.7]])
        self.assert_gradients(lambda v: dot(v, [0.5, -3.0]), [[1.2, -0.7]])
        self.assertEqual(len(dot([Value(1.0)], [2.0])._children), 1)
        # the same Value on both sides: d(x·x)/dx = 2x
        self.assert_gradients(lambda v: dot(v, v), [[-1.5, 0.3]])

    def test_matmul_builds_the_same_dots(self):
        rows = [[Value(0.1 * (i + j) - 0.3) for j in range(3)] for i in range(4)]
        xs = [[Value(0.2 * j - 0.5 * k) for j in range(3)] for k in range(2)]
        fast = matmul(rows, xs)
        plain = [[dot(row, x) for row in rows] for x in xs]
        self.assertEqual([[o.data for o in out] for out in fast],
                         [[o.data for o in out] for out in plain])
        floats = matmul([[v.data for v in r] for r in rows], [[v.data for v in x] for x in xs])
        self.assertEqual(floats, [[o.data for o in out] for out in plain])
        self.assertEqual(matmul([[], []], [[], []]), [[0.0, 0.0], [0.0, 0.0]])  # empty dots
        self.assertEqual(matmul(rows, []), [])

        def f(v):
            rows = [v[0:3], v[3:6]]
            outs = matmul(rows, [v[6:9], v[3:6]])
            return vsum([o * o for out in outs for o in out])
        self.assert_gradients(f, [[0.3, -1.2, 0.5, 2.0, -0.1, 0.01, 1.5, -0.7, 0.2]], rel=1e-4)

    def test_matmul_equals_the_reference_from_primitives(self):
        # the same numbers and gradients as the core's three-line definition, fewer nodes
        rows = [[Value(0.3 * i - 0.2 * j + 0.1) for j in range(4)] for i in range(3)]
        xs = [[Value(0.5 * j - 0.4 * k) for j in range(4)] for k in range(2)]
        grads = []
        for product in (matmul, reference_matmul):
            outs = product(rows, xs)
            vsum([o * (i + 1) for out in outs for i, o in enumerate(out)]).backward()
            leaves = sum(rows + xs, [])
            grads.append([v.grad for v in leaves])
            for v in leaves:  # leaves accumulate: start the second product from zero
                v.grad = 0.0
            self.assertEqual(len(outs), 2)
            for out, x in zip(outs, xs):
                for o, row in zip(out, rows):
                    self.assertTrue(math.isclose(o.data, sum(w.data * xi.data
                                                             for w, xi in zip(row, x)),
                                                 rel_tol=1e-12, abs_tol=1e-15))
        for fast, reference in zip(*grads):
            self.assertTrue(math.isclose(fast, reference, rel_tol=1e-12, abs_tol=1e-15))
        self.assertTrue(any(grads[0]))
        self.assertEqual(reference_matmul([[1.0, 2.0]], [[3.0, 4.0]]), [[11.0]])

    def test_matmul_with_a_residual(self):
        rows = [[0.5, -1.0, 2.0], [1.5, 0.0, -0.3]]
        xs = [[0.2, -0.7, 1.1], [3.0, 3.0, -2.0]]
        adds = [[10.0, -20.0], [0.25, 0.5]]
        expected = [[a + sum(r * x for r, x in zip(row, x)) for row, a in zip(rows, add)]
                    for x, add in zip(xs, adds)]
        floats = matmul(rows, xs, adds)
        values = matmul([[Value(r) for r in row] for row in rows],
                        [[Value(x) for x in x] for x in xs],
                        [[Value(a) for a in add] for add in adds])
        for want, got_floats, got_values in zip(expected, floats, values):
            for w, f, v in zip(want, got_floats, got_values):
                self.assertAlmostEqual(f, w, places=12)
                self.assertEqual(v.data, f)
                self.assertEqual(len(v._children), 7)  # one node: the row, the x and the add
        # plain numbers to add, or constants on one side: the same numbers
        as_values = [[Value(r) for r in row] for row in rows]
        self.assertEqual([[o.data for o in out] for out in matmul(as_values, xs, adds)], floats)
        self.assertEqual([[o.data for o in out]
                          for out in matmul(as_values, [[Value(x) for x in x] for x in xs], adds)],
                         floats)
        self.assertEqual(matmul([[], []], [[], []], adds), adds)  # empty dots add nothing

        def f(v):  # x + W·h for two vectors: W is v[0:4], h v[4:6] and v[6:8], x v[8:12]
            outs = matmul([v[0:2], v[2:4]], [v[4:6], v[6:8]], [v[8:10], v[10:12]])
            return vsum([o * o * (i + 1) for out in outs for i, o in enumerate(out)])
        self.assert_gradients(f, [[0.3, -1.2, 0.5, 2.0, -0.1, 0.01, 1.5, -0.7, 0.2, 0.0, 3.0,
                                   -2.5]], rel=1e-4)

    def test_relu_matmul(self):
        rows = [[0.5, -1.0, 2.0], [1.5, 0.0, -0.3], [-1.0, 0.2, 0.1]]
        xs = [[0.2, -0.7, 1.1], [3.0, 3.0, -2.0]]
        plain = [[max(o, 0.0) for o in out] for out in matmul(rows, xs)]
        value_rows = [[Value(r) for r in row] for row in rows]
        value_xs = [[Value(x) for x in x] for x in xs]
        for result in (relu_matmul(rows, xs), relu_matmul(value_rows, value_xs),
                       relu_matmul(value_rows, xs)):
            for out, want in zip(result, plain):
                self.assertEqual([o.data if isinstance(o, Value) else o for o in out], want)
        dead_and_live = relu_matmul(value_rows, value_xs)[1]  # units 0 and 2 are dead
        self.assertEqual([type(o) for o in dead_and_live], [float, Value, float])
        self.assertEqual(len(dead_and_live[1]._children), 6)  # one node: the live unit
        self.assertEqual(relu_matmul([[], []], [[], []]), [[0.0, 0.0], [0.0, 0.0]])

        def f(v):  # relu(W·x) for two vectors, W is v[0:6], the xs v[6:8] and v[8:10]
            results = relu_matmul([v[0:2], v[2:4], v[4:6]], [v[6:8], v[8:10]])
            return vsum([o * (i + 2) for out in results for i, o in enumerate(out)
                         if isinstance(o, Value)])
        self.assert_gradients(f, [[0.3, -1.2, 0.5, 2.0, -0.1, 0.01, 1.5, -0.7, 0.2, 0.9]])

    def test_matmul_of_a_vector_with_dead_units(self):
        # relu_matmul's zeros take no part: the same numbers as the full product, fewer edges
        rows = [[Value(w) for w in row] for row in [[0.5, -1.0, 2.0], [1.5, 0.3, -0.3]]]
        live = Value(0.7)
        for x, edges in (([0.0, live, 0.0], 2), ([live, live, live], 6)):
            outs = matmul(rows, [x], [[Value(1.0), Value(-2.0)]])[0]
            data = [float(v) if not isinstance(v, Value) else v.data for v in x]
            for out, row in zip(outs, rows):
                self.assertAlmostEqual(out.data, [1.0, -2.0][rows.index(row)]
                                       + sum(w.data * d for w, d in zip(row, data)), places=12)
                self.assertEqual(len(out._children), edges + 1)
        everything_dead = matmul(rows, [[0.0, 0.0, 0.0]], [[Value(1.0), Value(-2.0)]])[0]
        self.assertEqual([v.data for v in everything_dead], [1.0, -2.0])  # x + 0 is x
        with self.assertRaisesRegex(TypeError, 'other than 0'):
            matmul(rows, [[0.5, live, 0.0]])

        def f(v):  # W · (0, v[6], 0, v[7]) with W = v[0:6] as two rows of... four columns
            w = [[v[0], v[1], v[2], v[3]], [v[4], v[5], v[0], v[1]]]
            out = matmul(w, [[0.0, v[6], 0.0, v[7]]], [[v[8], v[9]]])[0]
            return out[0] * out[1]
        self.assert_gradients(f, [[0.3, -1.2, 0.5, 2.0, -0.1, 0.01, 1.5, -0.7, 0.2, 0.9]])

    def test_logsumexp(self):
        xs = [0.5, -1.0, 2.0]
        expected = math.log(sum(math.exp(x) for x in xs))
        self.assertAlmostEqual(logsumexp([Value(x) for x in xs]).data, expected, places=12)
        self.assertAlmostEqual(logsumexp(xs), expected, places=12)
        # no overflow: the largest input is taken out before exponentiating
        self.assertAlmostEqual(logsumexp([1000.0, 1000.0]), 1000 + math.log(2), places=9)
        self.assertAlmostEqual(logsumexp([Value(1000.0), Value(999.0)]).data,
                               1000 + math.log(1 + math.exp(-1)), places=9)
        self.assert_gradients(lambda v: logsumexp(v), [[0.5, -1.0, 2.0], [-1e-3, 1e-3, 0.0]])
        self.assert_gradients(lambda v: logsumexp(v[:2]) - v[1] * v[2], [[30.0, 31.0, -2.0]])

    def test_softmax_average(self):
        vectors = [[0.5, 1.5], [-1.0, 0.0], [2.0, -0.3]]  # one per position
        scores = [[0.2, -0.7, 1.1], [3.0, 3.0, -2.0]]     # one list per query

        def by_hand(scale):  # softmax, then the weighted sum, from primitives
            outs = []
            for s in scores:
                weights = [Value(scale * x).exp() for x in s]
                total = vsum(weights)
                p = [w / total for w in weights]
                outs.append([vsum([pj * v[d] for pj, v in zip(p, vectors)]).data
                             for d in range(2)])
            return outs
        for scale in (1.0, 0.5):
            expected = by_hand(scale)
            floats = softmax_average(scores, vectors, scale)
            values = softmax_average([[Value(x) for x in s] for s in scores],
                                     [[Value(x) for x in v] for v in vectors], scale)
            for want, got_floats, got_values in zip(expected, floats, values):
                for w, f, v in zip(want, got_floats, got_values):
                    self.assertAlmostEqual(f, w, places=12)
                    self.assertEqual(v.data, f)
                    self.assertEqual(len(v._children), 6)  # one node: the scores and a column
        # no overflow: the largest score is taken out before exponentiating
        self.assertAlmostEqual(softmax_average([[1000.0, 1000.0]], [[1.0], [0.0]])[0][0], 0.5)
        self.assertEqual(softmax_average([[1.0]], []), [[]])
        self.assertEqual(softmax_average([], [[1.0]]), [])
        # a shorter list of scores weighs only the first vectors: causal attention
        short = softmax_average([[Value(0.3)], [Value(0.3), Value(-1.0)]],
                                [[Value(x) for x in v] for v in vectors])
        self.assertEqual([v.data for v in short[0]], vectors[0])
        self.assertEqual([len(v._children) for v in short[1]], [4, 4])
        self.assertAlmostEqual(short[1][0].data, softmax_average([[0.3, -1.0]], vectors[:2])[0][0])

        def f(v):  # two queries' scores (v[0:3], v[3:6]) averaging three 2-vectors (v[6:12])
            outs = softmax_average([v[0:3], v[3:6]], [v[6:8], v[8:10], v[10:12]], 0.5)
            return vsum([o * (i + 1.5) for out in outs for i, o in enumerate(out)])
        self.assert_gradients(f, [[0.3, -1.2, 0.5, 2.0, -0.1, 0.01, 1.5, -0.7, 0.2, 0.0, 3.0,
                                   -2.5]])
        # constants on one side get no edges; the Values still get their gradients
        self.assert_gradients(lambda v: softmax_average([v], [[0.5], [-1.0], [2.0]])[0][0],
                              [[0.3, -1.2, 0.5]])
        self.assert_gradients(lambda v: softmax_average([[0.3, -1.2, 0.5]], [[x] for x in v])[0][0],
                              [[0.5, -1.0, 2.0]])


class MisuseTest(unittest.TestCase):
    """Mistakes a learner makes get an exception that says what went wrong."""

    def test_log_of_non_positive(self):
        for x in (0.0, -1.0):
            with self.assertRaisesRegex(ValueError, 'positive'):
                Value(x).log()

    def test_value_exponent(self):
        with self.assertRaisesRegex(TypeError, 'exponent'):
            Value(2.0) ** Value(3.0)

    def test_dot_of_unequal_lengths(self):
        with self.assertRaisesRegex(ValueError, 'same length'):
            dot([Value(1.0), Value(2.0)], [Value(1.0)])

    def test_matmul_of_unequal_lengths(self):
        with self.assertRaisesRegex(ValueError, 'a row has 2 numbers but a vector has 3'):
            matmul([[Value(1.0), Value(2.0)]], [[Value(0.0)] * 3])
        with self.assertRaisesRegex(ValueError, 'a row has 2 numbers but a vector has 3'):
            relu_matmul([[Value(1.0), Value(2.0)]], [[Value(0.0)] * 3])
        with self.assertRaisesRegex(ValueError, 'adds needs one vector per x'):
            matmul([[Value(1.0)]], [[Value(2.0)]], [[Value(1.0), Value(2.0)]])

    def test_softmax_average_of_unequal_lengths(self):
        with self.assertRaisesRegex(ValueError, '3 scores for 2 vectors'):
            softmax_average([[Value(0.0)] * 3], [[Value(1.0)], [Value(2.0)]])

    def test_mixed_list(self):
        with self.assertRaisesRegex(TypeError, 'mixes Values and plain numbers'):
            dot([Value(1.0), 2.0], [Value(1.0), Value(2.0)])

    def test_backward_from_something_that_is_not_a_number(self):
        with self.assertRaisesRegex(TypeError, 'single number'):
            Value([1.0, 2.0]).backward()

    def test_exp_overflow(self):
        with self.assertRaisesRegex(OverflowError, 'too large'):
            Value(1000.0).exp()

    def test_operators_refuse_other_types(self):
        with self.assertRaises(TypeError):
            Value(1.0) + 'a'
        with self.assertRaises(TypeError):
            Value(1.0) * [1.0]

    def test_repr_shows_data_grad_and_op(self):
        y = Value(2.0) * Value(3.0)
        y.backward()
        self.assertEqual(repr(y), "Value(data=6, grad=1, op='*')")


class GraphTest(GradientCheck):
    """Whole graphs: shared parts, heavy reuse, great depth, and how gradients accumulate."""

    def test_shared_subexpression(self):
        # y = u·u + u with u = a·b: a reaches y along three paths
        def f(v):
            u = v[0] * v[1]
            return u * u + u
        self.assert_gradients(f, [[1.5, -0.5], [-2.0, 0.3]])
        a, b = Value(1.5), Value(-0.5)
        u = a * b
        (u * u + u).backward()
        self.assertAlmostEqual(a.grad, (2 * u.data + 1) * b.data)

    def test_node_used_many_times(self):
        x = Value(0.5)
        y = x * 3.0
        total = vsum([y] * 1000) + vsum([y * x for _ in range(500)])
        total.backward()
        # d/dx [1000·3x + 500·3x²] = 3000 + 3000x
        self.assertAlmostEqual(x.grad, 3000 + 3000 * 0.5)
        self.assertAlmostEqual(y.grad, 1000 + 500 * 0.5)

    def test_a_million_deep_chain(self):
        x = Value(1.0)
        y = x
        factor = 1 + 1e-7
        for _ in range(1_000_000):
            y = y * factor
        y.backward()  # recursion would overflow the stack long before this depth
        self.assertTrue(math.isclose(x.grad, factor ** 1_000_000, rel_tol=1e-6))
        self.assertTrue(math.isclose(x.grad, math.exp(0.1), rel_tol=1e-6))

    def test_leaves_accumulate_and_intermediates_do_not(self):
        x = Value(2.0)
        u = x * x
        y = u * 3.0
        y.backward()
        self.assertEqual((x.grad, u.grad), (12.0, 3.0))
        y.backward()  # a second pass: the leaf adds up, the intermediate is recomputed
        self.assertEqual((x.grad, u.grad), (24.0, 3.0))
        (x * 5.0).backward()  # another result adds to the same leaf
        self.assertEqual(x.grad, 29.0)

    def test_backward_on_a_leaf(self):
        x = Value(3.0)
        x.backward()
        self.assertEqual(x.grad, 1.0)

    def test_dead_relu_keeps_no_edge(self):
        x = Value(-1.0)
        y = (x * 2.0).relu() + x
        y.backward()
        self.assertEqual(x.grad, 1.0)  # only the direct path: relu'(-2) = 0
        self.assertEqual((x * 2.0).relu()._children, ())

    def test_a_tape_records_in_the_order_made_and_only_inside_its_block(self):
        a, b = Value(1.0), Value(2.0)
        before = a * b
        with Tape() as tape:
            c = a * b
            d = c + a
            e = d * c
        after = e * 2.0
        self.assertEqual(tape, [c, d, e])  # leaves are not recorded; nor is what came before/after
        self.assertEqual(tape.up_to(e), [e, d, c])  # the same order topological_order finds
        self.assertEqual(topological_order(e), [e, d, c])
        e.backward(tape)
        self.assertEqual((a.grad, b.grad), (12.0, 5.0))  # e = a²b² + a²b, at a = 1, b = 2
        with self.assertRaisesRegex(ValueError, 'not made while the tape'):
            after.backward(tape)
        with self.assertRaisesRegex(ValueError, 'not made while the tape'):
            before.backward(tape)

    def test_with_a_tape_a_value_made_before_it_is_a_leaf(self):
        # the rule a Tape brings: the gradient stops at what was made outside the block
        x = Value(3.0)
        u = x * x
        with Tape() as tape:
            y = u * 2.0
        y.backward(tape)
        self.assertEqual((u.grad, x.grad), (2.0, 0.0))
        y.backward()  # the search finds the whole graph: dy/dx = 4x
        self.assertEqual((u.grad, x.grad), (2.0, 12.0))

    def test_tapes_do_not_nest_and_a_failed_block_stops_recording(self):
        with self.assertRaisesRegex(RuntimeError, 'already recording'):
            with Tape():
                with Tape():
                    pass
        with self.assertRaises(ZeroDivisionError):
            with Tape() as tape:
                Value(1.0) * 2.0
                1 / 0
        Value(1.0) * 3.0
        self.assertEqual(len(tape), 1)  # nothing recorded after the block ended
        with Tape() as again:  # and a new tape can start
            Value(1.0) * 4.0
        self.assertEqual(len(again), 1)

    def test_backward_with_a_tape_from_a_leaf(self):
        x = Value(3.0)
        with Tape() as tape:
            pass
        x.backward(tape)
        self.assertEqual(x.grad, 1.0)

    def test_topological_order(self):
        a, b = Value(1.0), Value(2.0)
        c = a * b
        d = c + a
        e = d * c
        order = topological_order(e)
        self.assertEqual(order, [e, d, c])  # each node before its children; leaves left out
        position = {node: i for i, node in enumerate(order)}
        for node in order:
            for child in node._children:
                if child._children:
                    self.assertLess(position[node], position[child])


if __name__ == '__main__':
    unittest.main()
