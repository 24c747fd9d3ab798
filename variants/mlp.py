"""An MLP denoiser in the transformer's place, to see what attention buys. It reads the whole
block at once, one-hot: every (position, token) pair has its own weights into one hidden ReLU
layer, and every position's logits come out of that layer. No attention, no weight sharing
across positions: the diffusion around it (noise, loss, sampler, ELBO) is the lesson's.

    logits at i = out_i · relu(Σ_j in[j, token_j])      (in, out: learned; j every position)
"""

from dataclasses import dataclass

import microdiffusion as md
from value import matmul, relu, vsum
from variants.padded import Padded
from variants.text import Text


@dataclass
class MLPConfig(md.Config):
    mlp_hidden: int = 8  # hidden units: 7,168 weights for names, near the transformer's 6,848


class MLP(md.Model):

    @staticmethod
    def shapes(cfg, vocab_size):
        width = cfg.block_size * vocab_size  # one input, and one output, per (position, token)
        return {'mlp_in': (cfg.mlp_hidden, width), 'mlp_out': (width, cfg.mlp_hidden)}

    def logits(self, tokens, positions):
        """A shorter input is PAD-filled to the block: the MLP weighs every position."""
        vocab_size, size = self.tok.vocab_size, self.cfg.block_size
        tokens = tokens + [self.tok.PAD] * (size - len(tokens))
        # W · onehot just adds up the columns of the tokens present, one per position.
        active = [i * vocab_size + tok for i, tok in enumerate(tokens)]
        hidden = [relu(vsum([row[j] for j in active])) for row in self.params['mlp_in']]
        out = self.params['mlp_out']
        return [matmul(out[i * vocab_size:(i + 1) * vocab_size], [hidden])[0] for i in positions]


class PaddedMLP(Padded, MLP):
    """The MLP on the padded block (the data's class first, as for TextGPT)."""


class TextMLP(Text, MLP):
    """The MLP on windows of running text. (A last block shorter than the window is PAD-filled:
    weights that training on windows never moved.)"""
