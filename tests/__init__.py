"""Tests for microdiffusion: python -m unittest finds them all. What several files share."""

import microdiffusion as md

NAMES = ['emma', 'olivia', 'ava', 'isabella', 'sophia', 'mia', 'amelia', 'harper', 'evelyn',
         'abigail', 'emily', 'ella', 'liam', 'noah', 'william', 'james', 'logan', 'benjamin',
         'mason', 'elijah', 'oliver', 'jacob', 'lucas', 'michael', 'alexander', 'ethan', 'daniel',
         'matthew', 'aiden', 'henry', 'joseph', 'jackson', 'samuel', 'sebastian', 'david', 'carter']
SHORT_NAMES = [n for n in NAMES if len(n) <= 7]  # each with its end fits a block of 8


def tiny(**changes):
    """The real architecture at full size, on this file's small vocabulary."""
    cfg = md.Config(**changes)
    tok = md.Tokenizer.from_names(NAMES)
    return cfg, tok


def smaller(**changes):
    """The same architecture, narrower and shorter, for tests that train."""
    shape = dict(n_embd=8, n_head=2, n_layer=2, block_size=8, val_every=1000)
    shape.update(changes)
    return tiny(**shape)


class UniformDenoiser:
    """All logits equal (zero), whatever the input: a model that knows nothing."""

    def __init__(self, vocab_size):
        self.vocab_size, self.calls = vocab_size, 0

    def __call__(self, params, cfg, tokens, positions):
        self.calls += 1
        return [[0.0] * self.vocab_size for _ in positions]
