"""Tests for microdiffusion: python -m unittest finds them all. What several files share."""

import functools
import random

import microdiffusion as md

NAMES = ['emma', 'olivia', 'ava', 'isabella', 'sophia', 'mia', 'amelia', 'harper', 'evelyn',
         'abigail', 'emily', 'ella', 'liam', 'noah', 'william', 'james', 'logan', 'benjamin',
         'mason', 'elijah', 'oliver', 'jacob', 'lucas', 'michael', 'alexander', 'ethan', 'daniel',
         'matthew', 'aiden', 'henry', 'joseph', 'jackson', 'samuel', 'sebastian', 'david', 'carter']
SHORT_NAMES = [n for n in NAMES if len(n) <= 7]  # each with its end fits a block of 8


def tiny(cfg_class=md.Config, **changes):
    """The real architecture at full size, on this file's small vocabulary."""
    return cfg_class(**changes), md.Tokenizer.from_names(NAMES)


def smaller(cfg_class=md.Config, **changes):
    """The same architecture, narrower and shorter, for tests that train."""
    return tiny(cfg_class, **{'n_embd': 8, 'n_head': 2, 'n_layer': 2, 'block_size': 8,
                              **changes})


def stub(kind, logits, cfg, tok, lengths=None):
    """A model of class `kind` (md.Model or a variant) with no parameters, whose logits come
    from logits(tokens, positions): odds a test chooses."""
    class Stub(kind):
        def logits(self, tokens, positions):
            return logits(tokens, positions)
    return Stub(cfg, tok, None, lengths)  # (no lengths: every length alike, if it draws one)


class Uniform:
    """All logits equal (zero), whatever the input: a model that knows nothing. It counts
    its calls, one a forward pass."""

    def __init__(self, vocab_size):
        self.vocab_size, self.calls = vocab_size, 0

    def __call__(self, tokens, positions):
        self.calls += 1
        return [[0.0] * self.vocab_size for _ in positions]


@functools.lru_cache(maxsize=None)
def trained():
    """The lesson's model trained for 60 steps on SHORT_NAMES[:24] (made once a run): what
    tests of a trained model share. Returns (the model, its NELBO's mean before training)."""
    cfg, _ = smaller(steps=60, batch_size=4, lr=0.03)
    names = SHORT_NAMES[:24]
    untrained = md.Model.new(cfg, md.Tokenizer.from_names(names), names)  # as train() starts
    return md.train(cfg, names, log_every=0), mean_nelbo(untrained, names)


def mean_nelbo(model, names):
    frozen = model.frozen()
    return sum(md.nelbo(frozen, frozen.encode(n), random.Random(i))
               for i, n in enumerate(names)) / len(names)
