"""What else the lesson's code trains. Each variant is a subclass of microdiffusion.Model in a
module of its own, overriding only the steps that differ: read one beside microdiffusion.py.

    padded.py   names PAD-filled to the block, every PAD erased and predicted: no p(length)
    gpt.py      the same transformer reading left to right, trained on the next token
    text.py     running text: windows of characters with no ends, written block after block
    mlp.py      a one-hidden-layer MLP in the transformer's place, for comparison

They combine where that means something: the MLP on names, padded names or text; a GPT on
names or text. A checkpoint records its variant by the name VARIANTS gives it.
"""

import microdiffusion as md
from variants.gpt import GPT
from variants.mlp import MLP, MLPConfig, PaddedMLP, TextMLP
from variants.padded import Padded
from variants.text import Text, TextGPT

VARIANTS = {'diffusion': md.Model, 'padded': Padded, 'text': Text, 'gpt': GPT,
            'text-gpt': TextGPT, 'mlp': MLP, 'padded-mlp': PaddedMLP, 'text-mlp': TextMLP}


def choose(model='diffusion', denoiser='transformer', padding=False, text=False):
    """The variant a model of these kinds is, by name; ValueError where none can be."""
    if model == 'gpt' and (padding or denoiser == 'mlp'):
        raise ValueError(f'--{"padding" if padding else "denoiser mlp"}: a GPT is the '
                         'transformer, reading left to right to the end')
    if text and padding:
        raise ValueError('--padding: running text has no ends to pad')
    data = 'text' if text else 'padded' if padding else ''
    kind = 'gpt' if model == 'gpt' else 'mlp' if denoiser == 'mlp' else ''
    return '-'.join(part for part in (data, kind) if part) or 'diffusion'


def flags(kind):
    """What choose() was told to make a variant's class: the lab's flags for it."""
    return {'model': 'gpt' if issubclass(kind, GPT) else 'diffusion',
            'denoiser': 'mlp' if issubclass(kind, MLP) else 'transformer',
            'padding': issubclass(kind, Padded), 'text': issubclass(kind, Text)}


def describe(kind):
    """A variant in words: 'a gpt transformer on running text'."""
    kinds = flags(kind)
    data = 'running text' if kinds['text'] else 'padded names' if kinds['padding'] else 'names'
    return f'a {kinds["model"]} {kinds["denoiser"]} on {data}'


def config_class(kind):
    """The configuration a variant's class reads: the lesson's, and the MLP's width."""
    return MLPConfig if issubclass(kind, MLP) else md.Config
