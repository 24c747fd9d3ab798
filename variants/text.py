"""Running text: a book, or code, instead of a list of names. It has no ends, so no length to
draw and no PAD: the model learns from windows of block_size characters cut from anywhere in
the text, masked as names are, and it writes block after block (write): each block keeps the
end of what is written so far in view and the reverse process fills in the rest, as LLaDA's
semi-autoregressive blocks and Block Diffusion do.

    training   a window:   t h e ␣ c _ t ␣ s _ t     (_ is MASK: each character erased with
                                                      probability t; ␣ is a space)
    writing    in view, then blanks:   s a t ␣ o n _ _ _ _ _ _   ->   s a t ␣ o n ␣ a ␣ m a t
"""

import random
from dataclasses import dataclass, replace

import microdiffusion as md
from variants.gpt import GPT


@dataclass
class Sampling(md.Sampling):
    """The writer's own defaults, those running text was measured with: 64 steps of the
    schedule (one character a pass, in the model's order of confidence) and no loop."""
    steps: int = 64
    temperature: float = 1.0
    loop_passes: int = 0


class Text(md.Model):

    def __init__(self, cfg, tok, params, lengths=None):
        super().__init__(cfg, tok, params, lengths)
        self.outputs = list(range(len(tok.chars)))  # a character, never PAD (as a TextGPT too)

    @staticmethod
    def count_lengths(names, block_size):
        return None  # a window has no end, so no length to draw

    @classmethod
    def longest(cls, cfg):
        return cfg.block_size  # a window fills the block

    def encode(self, window):
        return [self.tok.ids[c] for c in window]

    def erasable(self, tokens):
        return list(range(len(tokens)))  # every character

    def length_nll(self, tokens):
        return 0.0

    def starting_point(self, how, rng, trace=None):
        """What write() asks for (its pattern): the characters in view, then the blanks."""
        head = how.pattern[0]
        return list(head), [self.outputs] * len(head)

    def batches(self, text):
        return Windows(text, self.cfg)


class TextGPT(Text, GPT):
    """A GPT on running text: the GPT's causal transformer, exact loss and left-to-right
    filling on Text's windows, with no end to predict. (Text comes first: its windows, its
    outputs and its starting point win over GPT's.)"""


class Windows(md.Batches):
    """A step's windows of block_size characters, at offsets seeded by (seed, step)."""

    def at(self, step):
        text, size = self.names, self.cfg.block_size  # (Batches keeps the text as names)
        rng = random.Random(f'{self.cfg.seed}:windows:{step}')
        return [text[i:i + size] for i in
                [rng.randint(0, len(text) - size) for _ in range(self.cfg.batch_size)]]


def write(model, prompt, n, rng, how, context=None, trace=False):
    """n characters of running text after `prompt` (token ids), block after block: each block
    keeps the last `context` characters visible (by default three quarters of the window: the
    more in view, the surer each guess), and the reverse process fills the rest. Yields each
    block's new tokens and, if asked, its trace. With context = block_size - 1 a block is one
    character: a GPT's sliding window."""
    text, context = list(prompt), context or 3 * model.cfg.block_size // 4
    while n > 0:
        seen = text[max(0, len(text) - min(context, model.cfg.block_size - 1)):]
        blanks = seen + [model.tok.MASK] * min(model.cfg.block_size - len(seen), n)
        steps = [] if trace else None
        fresh = md.sample_tokens(model, rng, replace(how, pattern=(blanks, None)), steps)
        fresh = fresh[len(seen):]
        text += fresh
        n -= len(fresh)
        yield fresh, steps
