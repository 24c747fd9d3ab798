"""A scalar autograd engine: every number the model computes with is a Value.

A Value holds one float, `data`. When it is computed from other Values (its children) it
also keeps, for each child, the local derivative d(data)/d(child.data), worked out when the
operation runs. `backward()` applies the chain rule from a result back to every Value it
depends on, filling in `grad` = d(result)/d(this Value):

    child.grad += local_derivative * node.grad      for every edge, outputs before inputs

The file has three parts: the core (Value, its operations, backward), the Tape (a faster
way to order the graph for backward), and, after a banner, n-ary operations that give the
same numbers as their textbook compositions with far fewer nodes. Those also accept plain
floats and then build no graph, so one definition of a model both trains (on Values) and
samples (on floats).
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
        return Value(0.0, (), (), 'relu')  # flat at and below 0: derivative 0, no edge

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

        Leaves (Values with no children, such as parameters) ACCUMULATE: a second backward
        adds to their .grad, which is how a batch sums its gradients. Set them back to 0
        between steps. Intermediate Values get this pass's gradient afresh each time.
        The order (every node before its children) comes from `tape` if given, else from a
        search of the graph.
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
            if g:  # a node with gradient 0 (a dead ReLU unit, a logit no loss reads) adds 0
                for child, local_grad in zip(node._children, node._local_grads):
                    child.grad += local_grad * g


def topological_order(root):
    """The Values with children that root depends on, each before all of its children.

    Depth-first search with an explicit stack, so a graph a million nodes deep needs no
    recursion. Leaves are never pushed: they only receive gradient, in any order.
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


def reference_matmul(rows, xs):
    """The matrix rows times each vector in xs, from * and + alone: the definition that the
    fast matmul after the banner matches, number for number and gradient for gradient."""
    return [[sum([w * xi for w, xi in zip(row, x)], 0.0) for row in rows] for x in xs]


# ---------------------------------------------------------------------------------------------
# The Tape: the graph's order recorded as it is built
# ---------------------------------------------------------------------------------------------

class Tape(list):
    """The Values made from others inside a `with Tape() as tape:` block, in the order made.

    A Value is always made after its children, so the tape read backwards lists every node
    before its children: backward's order without the search (a fifth of a training step).
    One rule: a Value made outside the block counts as a leaf, and its gradient goes no further.
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


# ---------------------------------------------------------------------------------------------
# Fast n-ary operations. They exist for speed: each gives the same numbers (and gradients) as
# its textbook composition of the primitives above, tested against it, in ONE node per result
# instead of a chain of them. Each takes Values (and builds the graph) or plain floats (and
# returns floats). A list is all Values or all floats, so only its first item is checked
# (checking every number cost sampling 4%), with one exception: relu_matmul's output, where a
# dead unit is the plain number 0.0 among Values, since a node for it would carry nothing
# forward and no gradient back; matmul, which reads those vectors next, skips its zeros.
# ---------------------------------------------------------------------------------------------

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
    return Value(sum(_datas(xs, 'vsum')), tuple(xs), (1.0,) * len(xs), 'sum')


def dot(ws, xs):
    """w0*x0 + w1*x1 + ... as one node; d/dwi = xi, d/dxi = wi. Either list may be floats
    (constants), which then get no edges."""
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
    """The matrix `rows` times each vector in xs: [[dot(row, x) for row in rows] for x in xs].
    With adds (one vector per x), each result is add + rows·x: a residual connection, made in
    the same nodes (the add is one more child, derivative 1).

    A vector may hold plain 0.0s among its Values (relu_matmul's dead units): they add
    nothing, so they get no edges, and neither do the weights they meet. Each row's numbers
    are read once for all the vectors (40% off the forward pass).
    """
    if adds is None:
        adds = [None] * len(xs)
    elif len(adds) != len(xs) or any(len(add) != len(rows) for add in adds):
        raise ValueError('matmul: adds needs one vector per x, each as long as rows')
    if not (rows and xs and rows[0]):  # nothing to multiply: every dot is 0
        return [[0.0] * len(rows) if add is None else add[:] for add in adds]
    if not isinstance(rows[0][0], Value):  # constant weights
        if isinstance(xs[0][0], Value):  # times Values: one dot node each
            outs = [[dot(row, x) for row in rows] for x in xs]
        else:  # sampling: plain sums
            outs = [[sum(map(mul, row, x)) for row in rows] for x in xs]
        return [out if add is None else [a + o for a, o in zip(add, out)]
                for out, add in zip(outs, adds)]
    row_tuples, row_datas = _rows(rows, 'matmul')
    outs = []
    for x, add in zip(xs, adds):
        _check_length(x, rows, 'matmul')
        live = [j for j, xj in enumerate(x) if isinstance(xj, Value)]
        if not live and any(x):  # a constant vector: edges to the weights only
            out = [dot(row, x) for row in rows]
            outs.append(out if add is None else [a + o for a, o in zip(add, out)])
            continue
        if len(live) < len(x) and any(xj != 0 for xj in x if not isinstance(xj, Value)):
            raise TypeError('matmul: a vector mixes Values and plain numbers other than 0')
        if not live:  # every unit dead: rows · x is 0, and x + 0 is x itself
            outs.append([0.0] * len(rows) if add is None else list(add))
            continue
        if len(live) == len(x):
            x_tuple, x_data, rs, rds = tuple(x), tuple(_datas(x, 'matmul')), row_tuples, row_datas
        else:  # only the live units' columns take part
            x_tuple = tuple([x[j] for j in live])
            x_data = tuple([xj.data for xj in x_tuple])
            rs = [tuple([row[j] for j in live]) for row in row_tuples]
            rds = [tuple([rd[j] for j in live]) for rd in row_datas]
        if add is None:
            outs.append([Value(sum(map(mul, rd, x_data)), r + x_tuple, x_data + rd, 'dot')
                         for r, rd in zip(rs, rds)])
        else:
            if not isinstance(add[0], Value):
                add = [Value(a) for a in add]  # constants: leaves whose gradient nobody reads
            outs.append([Value(a.data + sum(map(mul, rd, x_data)), r + x_tuple + (a,),
                               x_data + rd + (1.0,), '+dot') for r, rd, a in zip(rs, rds, add)])
    return outs


def relu_matmul(rows, xs):
    """[[relu(dot(row, x)) for row in rows] for x in xs], where a unit at or below 0 is the
    plain number 0.0 and gets no node: it would carry nothing forward and no gradient back
    (about half the units of a trained MLP). A live unit is its dot node itself, since relu
    leaves a positive number as it is."""
    if not (rows and xs and rows[0] and isinstance(rows[0][0], Value)
            and isinstance(xs[0][0], Value)):
        outs = matmul(rows, xs)
        if outs and outs[0] and isinstance(outs[0][0], Value):  # constants on one side
            return [[o if o.data > 0 else 0.0 for o in out] for out in outs]
        return [[o if o > 0 else 0.0 for o in out] for out in outs]
    row_tuples, row_datas = _rows(rows, 'relu_matmul')
    results = []
    for x in xs:
        _check_length(x, rows, 'relu_matmul')
        x_tuple = tuple(x)
        x_data = tuple(_datas(x, 'relu_matmul'))
        sums = [sum(map(mul, rd, x_data)) for rd in row_datas]
        results.append([Value(s, r + x_tuple, x_data + rd, 'relu·') if s > 0 else 0.0
                        for s, r, rd in zip(sums, row_tuples, row_datas)])
    return results


def logsumexp(xs):
    """log(exp(x0) + exp(x1) + ...) as one node; d/dxi = softmax(xs)_i. The largest x is
    taken out before exponentiating and added back after, so no exp overflows."""
    if not isinstance(xs[0], Value):
        top, shifted = _shifted_exps(xs)
        return top + math.log(sum(shifted))
    top, shifted = _shifted_exps(_datas(xs, 'logsumexp'))
    total = sum(shifted)
    return Value(top + math.log(total), tuple(xs), tuple([e / total for e in shifted]), 'lse')


def softmax_average(scores, vectors, scale=1.0):
    """For each list s in scores: Σ_j softmax(scale · s)_j · vectors[j], the vectors averaged
    with softmax weights. This is attention's output, with s a query's scores q·k. A list
    shorter than vectors weighs only the first len(s) of them (causal attention).

    Each output number is ONE node whose children are s and the vectors' numbers: the
    softmax makes no nodes of its own. With p = softmax(scale · s) and out = Σ_j p_j v_j,
    d out/d v_j = p_j and d out/d s_j = scale · p_j · (v_j - out).
    """
    if not vectors:
        return [[] for _ in scores]
    columns = [list(c) for c in zip(*vectors)]  # one list per output number, over positions
    columns_are_values = bool(columns) and isinstance(columns[0][0], Value)
    column_datas = ([_datas(c, 'softmax_average') for c in columns] if columns_are_values
                    else columns)
    outs = []
    for s in scores:
        if not 0 < len(s) <= len(vectors):
            raise ValueError(f'softmax_average: {len(s)} scores for {len(vectors)} vectors')
        s_is_value = isinstance(s[0], Value)
        _, shifted = _shifted_exps(_datas(s, 'softmax_average') if s_is_value else s, scale)
        total = sum(shifted)
        p = [e / total for e in shifted]
        averages = [sum(map(mul, p, cd)) for cd in column_datas]
        if not (s_is_value or columns_are_values):
            outs.append(averages)
            continue
        s_tuple, p_tuple = tuple(s), tuple(p)
        out = []
        for column, cd, average in zip(columns, column_datas, averages):
            children, local_grads = (), ()
            if s_is_value:
                children = s_tuple
                local_grads = tuple([scale * pj * (vj - average) for pj, vj in zip(p, cd)])
            if columns_are_values:
                children += tuple(column[:len(p)])
                local_grads += p_tuple
            out.append(Value(average, children, local_grads, 'softmax·'))
        outs.append(out)
    return outs


def _shifted_exps(numbers, scale=1.0):
    """(top, [exp(scale · (x - top)) for x in numbers]), top the largest: no exp overflows."""
    top = max(numbers)
    return top, [math.exp(scale * (x - top)) for x in numbers]


def _rows(rows, who):
    """A matrix of Values as (its rows as tuples, their numbers as tuples), read once."""
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
