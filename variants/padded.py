"""The padded block: every name PAD-filled to block_size, each PAD erased and predicted like a
letter. The lesson's model draws a length first and never predicts the end; this one learns
where names end as it learns their letters, at a price measured in MEASUREMENTS.md: three
times the positions to compute, a worse NELBO, and name lengths that drift from the data's.

    forward process     e m m a . . . .   ->   e _ m a . _ . _   (PADs erased too)
    reverse process     the end drawn first from the model's own odds, then the letters
"""

import math
from dataclasses import dataclass

import microdiffusion as md


@dataclass
class Sampling(md.Sampling):
    length: str = 'first'  # 'first': the end drawn before any letter; 'along': as a letter


class EndToken(md.Model):
    """What the padded block and the GPT share: the end is a token, PAD, that the model
    predicts like a letter, where the lesson draws a length first."""

    def __init__(self, cfg, tok, params, lengths=None):
        super().__init__(cfg, tok, params, lengths)
        self.outputs = self.outputs + [tok.PAD]  # the end: a prediction like a letter

    @staticmethod
    def count_lengths(names, block_size):
        return None  # no p(length): the end is found with the letters

    def erasable(self, tokens):
        return list(range(len(tokens)))  # every position is predicted, PAD included

    def length_nll(self, tokens):
        return 0.0  # the end's -log p is among the positions'

    def pattern_problem(self, head, tail):
        if tail:  # its end is found along the way, not drawn first
            return "'*' may only come last for this model"
        return None


class Padded(EndToken):

    @classmethod
    def longest(cls, cfg):
        return cfg.block_size  # a name may fill the block: its end is the block's

    def encode(self, name):
        return self.tok.encode(name, self.cfg.block_size)

    def starting_point(self, how, rng, trace=None):
        """The block (see block). With how.length 'first' (the lesson's Sampling has no such
        field: first) the end is placed before any letter (draw_end), unless the block is
        filled left to right; the candidates then say which positions hold letters."""
        seq, candidates = block(self, how)
        if getattr(how, 'length', 'first') == 'first' and not self.fills_left_to_right(how):
            before, (seq, candidates) = seq, draw_end(self, seq, candidates, rng)
            if trace is not None and seq != before:
                trace.append((how.steps, 1.0, 1.0, seq))  # the end, drawn at T = 1
        return seq, candidates


def block(model, how):
    """(tokens, candidates) of a PAD-filled block: a pattern's beginning, then blanks that may
    be letters or the end (or, for a pattern of fixed length, the end itself)."""
    tok, (head, tail) = model.tok, how.pattern or ([], [])
    rest = model.cfg.block_size - len(head)
    seq = head + [tok.MASK if tail is not None else tok.PAD] * rest
    return seq, [model.outputs[:-1]] * len(head) + [model.outputs] * rest


def draw_end(model, seq, candidates, rng):
    """Where the name ends, drawn from the model's odds (at T = 1) before any letter. PADs only
    follow PADs, so P(PAD at i), every open position masked, is the model's P(ended by i): a
    cumulative distribution, but one softmax a position, so the curve may dip where it should
    not: it is read as its running maximum. The end is the first i where it passes a uniform u.
    From it on, the open positions are PAD; before it, letters."""
    pad, mask = model.tok.PAD, model.tok.MASK
    blanks = [i for i, tok in enumerate(seq) if tok == mask and pad in candidates[i]]
    cdf, end, u = 0.0, len(seq), rng.random()  # end = len(seq): no PAD, every position a letter
    for i, logits in zip(blanks, model.logits(seq, blanks)):
        cdf = max(cdf, math.exp(logits[pad] - md.logsumexp([logits[c] for c in candidates[i]])))
        if u < cdf:
            end = i
            break
    seq = [pad if i in blanks and i >= end else tok for i, tok in enumerate(seq)]
    return seq, [[c for c in cs if c != pad] if i in blanks and i < end else cs
                 for i, cs in enumerate(candidates)]
