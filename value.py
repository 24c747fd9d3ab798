"""A scalar autograd engine: every number the model computes with is a Value.

A Value holds one float, `data`. When it is computed from other Values (its children) it
also keeps, for each child, the local derivative d(data)/d(child.data), worked out at the
moment the operation runs. `backward()` then applies the chain rule from a result back to
every Value it depends on, filling in `grad` = d(result)/d(this Value):

    child.grad += local_derivative * node.grad      for every edge, outputs before inputs

Besides the operators (+ - * / ** and unary -) and exp, log and relu, n-ary helpers build
ONE node however many inputs they take, which keeps graphs small and fast: vsum (a sum), dot
(a dot product; matmul, many of them, each optionally plus one more number; matmul_relu,
with nodes only for the outputs ReLU keeps), logsumexp (log of a sum of exps, whose local
derivatives are the softmax) and softmax_matmul (softmax-weighted averages: attention).

The helpers also accept plain floats, and then return plain floats with no graph at all. So
one definition of a model runs on Values (to train it) and on floats (to sample from it).

backward() needs the graph's nodes in an order that puts every node before its children. It
finds one by searching the graph, or, faster, reads it off a Tape that recorded the nodes as
they were made (see Tape).
"""

import math
from operator import mul

_recording = None  # the Tape a `with Tape()` block is filling, if any


class Value:
    """One number in a computation graph, with its gradient."""

    __slots__ = ('data', 'grad', '_children', '_local_grads', '_op')

    def __init__(self, data, children=(), local_grads=(), op=''):
        self.data = data                  # the number itself
        self.grad = 0.0                   # d(result of the last backward) / d(this)
        self._children = children         # the Values this one was computed from
        self._local_grads = local_grads   # d(this) / d(child), one per child
        self._op = op                     # a short label for the operation, for debugging
        if children and _recording is not None:
            _recording.append(self)

    def __repr__(self):
        return f'Value(data={self.data:.6g}, grad={self.grad:.6g}, op={self._op!r})'

    # --- primitives: each states its value and its local derivatives together ---------------

    def __add__(self, other):
        if isinstance(other, Value):
            return Value(self.data + other.data, (self, other), (1.0, 1.0), '+')
        if isinstance(other, (int, float)):
            return Value(self.data + other, (self,), (1.0,), '+')
        return NotImplemented

    def __mul__(self, other):
        if isinstance(other, Value):
            return Value(self.data * other.data, (self, other), (other.data, self.data), '*')
        if isinstance(other, (int, float)):
            return Value(self.data * other, (self,), (other,), '*')
        return NotImplemented

    def __pow__(self, k):
        if isinstance(k, Value):
            raise TypeError('the exponent in x ** k must be a plain number, not a Value; '
                            'for a Value exponent write (k * x.log()).exp()')
        if not isinstance(k, (int, float)):
            return NotImplemented
        return Value(self.data ** k, (self,), (k * self.data ** (k - 1),), f'**{k:g}')

    def exp(self):
        try:
            e = math.exp(self.data)
        except OverflowError:
            raise OverflowError(f'exp({self.data:g}) is too large for a float') from None
        return Value(e, (self,), (e,), 'exp')

    def log(self):
        if self.data <= 0:
            raise ValueError(f'log is only defined for positive numbers, got {self.data:g}')
        return Value(math.log(self.data), (self,), (1.0 / self.data,), 'log')

    def relu(self):
        if self.data > 0:
            return Value(self.data, (self,), (1.0,), 'relu')
        # At or below zero relu is the constant 0, derivative 0: an edge would carry nothing.
        return Value(0.0, (), (), 'relu')

    # --- derived operations, built from the primitives ---------------------------------------

    def __radd__(self, other): return self + other
    def __rmul__(self, other): return self * other
    def __neg__(self): return self * -1.0
    def __sub__(self, other): return self + (-other)
    def __rsub__(self, other): return (-self) + other
    def __truediv__(self, other): return self * other ** -1
    def __rtruediv__(self, other): return other * self ** -1

    # --- the chain rule ----------------------------------------------------------------------

    def backward(self, tape=None):
        """Set .grad of every Value this one depends on to d(self)/d(that Value).

        Leaves (Values made by hand, such as parameters, with no children) ACCUMULATE: a
        second backward, from this or another result, adds to their .grad, which is how a
        batch sums its gradients. Set leaf grads back to 0 between steps (the optimiser
        does). Intermediate Values get this pass's gradient afresh each time.

        With a tape that recorded this Value being made, the nodes are taken from it in
        reverse; without one, topological_order searches the graph for them.
        """
        if not isinstance(self.data, (int, float)):
            raise TypeError('backward() starts from a single number, but this Value holds '
                            f'a {type(self.data).__name__}')
        order = topological_order(self) if tape is None else tape.up_to(self)
        for node in order:
            node.grad = 0.0
        self.grad += 1.0
        for node in order:
            g = node.grad
            if g:  # a node with gradient 0 (a dead ReLU unit, the unused MASK logit) adds 0
                for child, local_grad in zip(node._children, node._local_grads):
                    child.grad += local_grad * g


class Tape(list):
    """The Values made from others inside a `with Tape() as tape:` block, in the order made.

    A Value is always made after its children, so a tape read backwards lists every node
    before its children: the order backward() needs, for free. The search that finds it
    without a tape visits every edge of the graph, a fifth of a training step (measured).
    The price is one rule: everything the result depends on must be made inside the block.
    A Value made outside it counts as a leaf there, and its gradient goes no further.
    """

    def __enter__(self):
        global _recording
        if _recording is not None:
            raise RuntimeError('a Tape is already recording; tapes do not nest')
        _recording = self
        return self

    def __exit__(self, *exc):
        global _recording
        _recording = None

    def up_to(self, root):
        """root and the nodes recorded before it, newest first: root's graph in backward order
        (with any nodes root does not depend on, whose gradient stays 0)."""
        if not root._children:
            return []  # a leaf: backward has nothing to order
        for i in range(len(self) - 1, -1, -1):
            if self[i] is root:
                return self[i::-1]
        raise ValueError('this Value was not made while the tape was recording; '
                         'call backward() without the tape')


def topological_order(root):
    """The Values with children that root depends on, each before all of its children.

    Found by depth-first search with an explicit stack, so a graph a million nodes deep
    needs no recursion. Leaves are never pushed: they only receive gradient, in any order.
    """
    postorder = []  # a node is appended once all of its children have been
    seen = {root}
    stack = [(root, iter(root._children))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if child._children and child not in seen:
                seen.add(child)
                stack.append((child, iter(child._children)))
                break
        else:  # every child is done
            stack.pop()
            postorder.append(node)
    if not root._children:
        postorder.pop()  # a leaf root gets its 1.0 but needs no place in the order
    postorder.reverse()
    return postorder


# --- helpers that work on Values and on plain floats alike -----------------------------------

# A list is all Values or all plain numbers, so a list helper checks its first item only.
# Checking every number on its own (exp(x) and x.data, one at a time) cost sampling 4%.

def datas(xs):
    """The numbers in a list: each Value's .data, or the list itself if it holds plain numbers."""
    return _datas(xs, 'datas') if xs and isinstance(xs[0], Value) else xs


def exp(x):
    return x.exp() if isinstance(x, Value) else math.exp(x)


def log(x):
    return x.log() if isinstance(x, Value) else math.log(x)


def relu(x):
    if isinstance(x, Value):
        return x.relu()
    return x if x > 0 else 0.0


def vsum(xs):
    """x0 + x1 + ... as one node; d/dxi = 1."""
    if not xs or not isinstance(xs[0], Value):
        return float(sum(xs))
    numbers = _datas(xs, 'vsum')
    return Value(sum(numbers), tuple(xs), (1.0,) * len(xs), 'sum')


def dot(ws, xs):
    """w0*x0 + w1*x1 + ... as one node; d/dwi = xi and d/dxi = wi.

    Either list may be plain numbers (constants), which then get no edges.
    """
    if len(ws) != len(xs):
        raise ValueError(f'dot needs two lists of the same length, got {len(ws)} and {len(xs)}')
    w_is_value = bool(ws) and isinstance(ws[0], Value)
    x_is_value = bool(xs) and isinstance(xs[0], Value)
    if not (w_is_value or x_is_value):
        return float(sum(map(mul, ws, xs)))
    wd = _datas(ws, 'dot') if w_is_value else ws
    xd = _datas(xs, 'dot') if x_is_value else xs
    data = sum(map(mul, wd, xd))
    if w_is_value and x_is_value:
        return Value(data, (*ws, *xs), (*xd, *wd), 'dot')
    if w_is_value:
        return Value(data, tuple(ws), tuple(xd), 'dot')
    return Value(data, tuple(xs), tuple(wd), 'dot')


def matmul(rows, xs, adds=None):
    """[[dot(row, x) for row in rows] for x in xs]: the matrix `rows` times each vector in xs.
    With adds (one vector per x), each result is add + rows·x instead: a residual connection,
    made in the same nodes, each with the add as one more child (derivative 1).

    The same numbers as dot nodes (and + nodes), built faster: each row's and each vector's
    numbers are read once, not once per pair (measured: 40% off the model's forward pass),
    and the residual's + costs no nodes of its own.
    """
    if adds is None:
        adds = [None] * len(xs)
    elif len(adds) != len(xs) or any(len(add) != len(rows) for add in adds):
        raise ValueError('matmul: adds needs one vector per x, each as long as rows')
    if not (rows and xs and rows[0] and xs[0]):  # nothing to multiply: every dot is 0
        return [[0.0] * len(rows) if add is None else add[:] for add in adds]
    if not (isinstance(rows[0][0], Value) and isinstance(xs[0][0], Value)):
        if isinstance(rows[0][0], Value) or isinstance(xs[0][0], Value):  # constants on one side
            outs = [[dot(row, x) for row in rows] for x in xs]
        else:
            outs = [[sum(map(mul, row, x)) for row in rows] for x in xs]
        return [out if add is None else [a + o for a, o in zip(add, out)]
                for out, add in zip(outs, adds)]
    row_tuples, row_datas = _rows(rows, 'matmul')
    outs = []
    for x, add in zip(xs, adds):
        _check_length(x, rows, 'matmul')
        x_tuple = tuple(x)
        x_data = tuple(_datas(x, 'matmul'))
        if add is not None and not isinstance(add[0], Value):
            add = [Value(a) for a in add]  # constants: leaves whose gradient nobody reads
        if add is None:
            outs.append([Value(sum(map(mul, row_data, x_data)), row + x_tuple, x_data + row_data,
                               'dot') for row, row_data in zip(row_tuples, row_datas)])
        else:
            outs.append([Value(a.data + sum(map(mul, row_data, x_data)), row + x_tuple + (a,),
                               x_data + row_data + (1.0,), '+dot')
                         for row, row_data, a in zip(row_tuples, row_datas, add)])
    return outs


def matmul_relu(rows, xs):
    """relu(rows · x) for each x, as (alive, live): alive lists the outputs that are positive
    (their indices), and live holds them, in that order.

    The zeros are left out altogether: they would carry nothing forward and no gradient back,
    so no node is made for them (a trained MLP has about half its units at zero). A live
    output is its dot node itself, as relu leaves a positive number as it is.
    """
    if not (rows and xs and rows[0] and xs[0] and isinstance(rows[0][0], Value)
            and isinstance(xs[0][0], Value)):
        results = []
        for out in matmul(rows, xs):
            alive = [i for i, o in enumerate(datas(out)) if o > 0]
            results.append((alive, [out[i] for i in alive]))
        return results
    row_tuples, row_datas = _rows(rows, 'matmul_relu')
    results = []
    for x in xs:
        _check_length(x, rows, 'matmul_relu')
        x_tuple = tuple(x)
        x_data = tuple(_datas(x, 'matmul_relu'))
        sums = [sum(map(mul, row_data, x_data)) for row_data in row_datas]
        alive = [i for i, s in enumerate(sums) if s > 0]
        results.append((alive, [Value(sums[i], row_tuples[i] + x_tuple, x_data + row_datas[i],
                                      'dot') for i in alive]))
    return results


def logsumexp(xs):
    """log(exp(x0) + exp(x1) + ...) as one node; d/dxi = softmax(xs)_i.

    The largest x is subtracted before exponentiating and added back after, so no exp
    overflows; the result is the same number.
    """
    if not isinstance(xs[0], Value):
        top, shifted = _shifted_exps(xs)
        return top + math.log(sum(shifted))
    top, shifted = _shifted_exps(_datas(xs, 'logsumexp'))
    total = sum(shifted)
    return Value(top + math.log(total), tuple(xs), tuple([e / total for e in shifted]), 'lse')


def softmax_matmul(rows, xs, scale=1.0):
    """matmul(rows, [softmax(scale · x) for x in xs]): per vector x, each row averaged with
    the weights softmax(scale · x). Attention is exactly this, with x a query's scores and the
    rows the value vectors' columns.

    Each output is ONE node whose children are x and the row: the softmax makes no nodes of
    its own. With p = softmax(scale · x) and out = p · row, d out/d row_j = p_j and
    d out/d x_j = scale · p_j (row_j - out). As in logsumexp, the largest x is subtracted first.
    """
    if not rows:
        return [[] for _ in xs]
    rows_are_values = bool(rows[0]) and isinstance(rows[0][0], Value)
    row_datas = [_datas(row, 'softmax_matmul') for row in rows] if rows_are_values else rows
    outs = []
    for x in xs:
        _check_length(x, rows, 'softmax_matmul')
        x_is_value = isinstance(x[0], Value)
        _, shifted = _shifted_exps(_datas(x, 'softmax_matmul') if x_is_value else x, scale)
        total = sum(shifted)
        p = [e / total for e in shifted]
        averages = [sum(map(mul, p, row_data)) for row_data in row_datas]
        if not (x_is_value or rows_are_values):
            outs.append(averages)
            continue
        x_tuple, p_tuple = tuple(x), tuple(p)
        out = []
        for row, row_data, average in zip(rows, row_datas, averages):
            children, local_grads = (), ()
            if x_is_value:
                children = x_tuple
                local_grads = tuple([scale * pj * (rj - average) for pj, rj in zip(p, row_data)])
            if rows_are_values:
                children += tuple(row)
                local_grads += p_tuple
            out.append(Value(average, children, local_grads, 'softmax·'))
        outs.append(out)
    return outs


def _shifted_exps(numbers, scale=1.0):
    """(top, [exp(scale · (x - top)) for x in numbers]) with top the largest number: the
    exps of a softmax or a logsumexp, none of which can overflow."""
    top = max(numbers)
    return top, [math.exp(scale * (x - top)) for x in numbers]


def _rows(rows, who):
    """A matrix of Values as (its rows as tuples, their numbers as tuples), read once for all
    the vectors it multiplies."""
    return [tuple(row) for row in rows], [tuple(_datas(row, who)) for row in rows]


def _check_length(x, rows, who):
    if len(x) != len(rows[0]):
        raise ValueError(f'{who}: a row has {len(rows[0])} numbers but a vector has {len(x)}')


def _datas(xs, who):
    """The floats inside a list of Values, with a clear error for a list that mixes types."""
    try:
        return [x.data for x in xs]
    except AttributeError:
        raise TypeError(f'{who}: a list mixes Values and plain numbers; '
                        'wrap the numbers in Value(...)') from None
