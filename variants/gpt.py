"""GPT: the lesson's transformer reading left to right, trained to predict the next token.

Diffusion erases letters anywhere and predicts them from both sides; a GPT (microGPT) sees
only what came before. What changes:

- logits: attention is causal, and the tokens are read one place to the right, behind a
  start token, so position i's logits predict token i from tokens 0..i-1. MASK's row of wte
  serves as the start token: a GPT never masks anything.
- the end (PAD) is a prediction like a letter, not a length drawn first, and the loss is
  p(name)'s exact -log by the chain rule, every token from those before it: one forward pass.
- sampling fills one position after another (the lesson's left-to-right order, its only one),
  so a pattern can fix only a beginning: 'ka*' or 'ka__', never 'k_a' or '*lyn'.

    training   start e m m a        reverse   e m m _ _ _ ...
               -> e  m m a .                  -> e m m a _ _ ...  (one token a step)
"""

import microdiffusion as md
from variants.padded import EndToken, block


class GPT(EndToken):  # the end a token it predicts, as the padded block's (variants/padded.py)

    def logits(self, tokens, positions):
        """For each position i, its logits given tokens[:i] alone: the start token and the
        tokens before the last position asked about are read, and causal attention keeps each
        position from those after it (all of them are asked about in training)."""
        start = [self.tok.MASK]
        return md.transformer(self.params, self.cfg, start + tokens[:max(positions, default=0)],
                              positions, causal=True)

    def loss(self, tokens, t, rng):
        return self.nll(tokens)  # no noise: t and rng are not used

    def nll(self, tokens, seen=0):
        """-log p(tokens) exactly, by the chain rule (from token `seen` on, given those before)."""
        logits = self.logits(tokens, range(seen, len(tokens)))
        return md.vsum([md.token_nll(lg, target, self.outputs)
                        for lg, target in zip(logits, tokens[seen:])])

    def pattern_problem(self, head, tail):
        mask = self.tok.MASK
        if mask in head and any(t != mask for t in head[head.index(mask):]):
            return ('a GPT reads left to right, so it can only continue a fixed beginning (ka*, '
                    'ka__); filling a blank before a fixed letter takes diffusion')
        return super().pattern_problem(head, tail)

    def fills_left_to_right(self, how):
        return True  # the only order a GPT can fill in: each token from those before it

    def starting_point(self, how, rng, trace=None):
        """The padded model's block (variants/padded.py), but its last position can only be
        the end: the start token takes one of the block's positions."""
        seq, candidates = block(self, how)
        return seq, candidates[:-1] + [[self.tok.PAD]]
