"""Checkpoints: one JSON file holding a model, and what continues its training.

The format, version 3, enough to load a model anywhere else:

    {"format": "microdiffusion checkpoint", "version": 3,
     "variant": "diffusion",   a name of variants.VARIANTS: diffusion, padded, text, gpt,
                               text-gpt, mlp, padded-mlp or text-mlp
     "chars": ["a", ...],      the vocabulary: token i < C is chars[i], MASK is C, PAD is C + 1
     "config": {"n_embd": 16, "n_head": 4, "n_layer": 2, "block_size": 16},  + "mlp_hidden"
     "lengths": [0, ...],      p(length) for lengths 0 .. block_size - 1 (diffusion, mlp)
     "params": {"wte": [[...], ...], ...},  each matrix [out][in] (a row per output), floats
     "training": {...}}        what train --resume continues from; not needed to use the model

The transformer, on tokens x_0 .. x_{n-1} (diffusion on names: the letters, MASK where one is
erased, then PAD), with d = n_embd, H = n_head heads of d/H, norm(v) = v / √(mean(v²) + 1e-5)
and W·v a matrix (layer{l}.attn_wq, ...) times a vector:

    e_i = norm(wte[x_i] + wpe[i])
    each layer l:  q_i, k_i, v_i = Wq·norm(e_i), Wk·norm(e_i), Wv·norm(e_i)
                   each head: a_ij = softmax over j of q_i·k_j / √(d/H),  o_i = Σ_j a_ij v_j
                   e_i = e_i + Wo·(the heads' o_i side by side)
                   e_i = e_i + mlp_fc2·relu(mlp_fc1·norm(e_i))
    logits_i = wte · e_i      p(x_i) = softmax over the letters (and PAD for padded and gpt
                              variants, which predict the end), never MASK

A gpt variant's attention is causal (j <= i), and it reads [MASK] + x_0 .. x_{n-2}: its
logits at i predict x_i. The mlp variants: logits_i = mlp_out[i·V:(i+1)·V] · relu(Σ_j
mlp_in[:, j·V + x_j]), V = C + 2, the input PAD-filled to the block. Versions 1 and 2 had no
"variant": it is read from their "config" ("model", "denoiser", "text") and "lengths".
"""

import json
import os
from dataclasses import fields

import microdiffusion as md
import variants
from lab.data import read_file
from lab.files import FORMAT, MAX_CHECKPOINT, remove_stale_temporaries, write_atomic
from lab.settings import LIMITS, MAX_WEIGHT, Validation, fits, numbers, too_large
from lab.terminal import UserError, unsafe

VERSION, OLDEST = 3, 1  # version 2 added p(length), "lengths"; version 3, "variant"
MAX_HISTORY = 100_000


def shape_fields(kind):
    """The settings that fix a model's parameters: what "config" records."""
    return ('n_embd', 'n_head', 'n_layer', 'block_size') + (
        ('mlp_hidden',) if issubclass(kind, variants.MLP) else ())


def variant_name(model):
    return next(name for name, kind in variants.VARIANTS.items() if type(model) is kind)


def save_checkpoint(path, model, training=None):
    """The model (and what --resume needs) in one JSON file. Floats are written with repr, so
    they read back exactly; a save killed part-way leaves a temporary file that the next save
    removes."""
    doc = {'format': FORMAT, 'version': VERSION, 'variant': variant_name(model),
           'chars': model.tok.chars,
           'config': {name: getattr(model.cfg, name) for name in shape_fields(type(model))},
           'params': md.as_floats(model.params)}
    doc.update({'lengths': model.lengths} if model.lengths is not None else {})
    doc.update({'training': training} if training else {})
    text = json.dumps(doc, allow_nan=False)
    remove_stale_temporaries(path)
    write_atomic(path, text)


def loadable(model, adam=None):
    """Whether load_checkpoint would take these weights (and Adam's moments) back."""
    return numbers([p.data for p in md.flatten(model.params)], MAX_WEIGHT) and (
        adam is None or numbers(adam.m, 1e12) and numbers(adam.v, 1e12))


def read_json(path, flag):
    """A checkpoint file's JSON object, or a UserError that says what is wrong with it."""
    if not os.path.isfile(path):
        raise UserError(f'{flag} {path}: ' + ('is not a regular file, so not a checkpoint' if
                        os.path.exists(path) else 'no such checkpoint; train one first '
                        '(python microdiffusion.py train) or give another'))

    def reject(constant):  # NaN or Infinity
        raise UserError(f'{path}: holds {constant}, not a finite number; it is damaged')
    try:
        return json.loads(read_file(path, 'a checkpoint', MAX_CHECKPOINT).decode('utf-8'),
                          parse_constant=reject)
    except (ValueError, RecursionError) as e:  # not UTF-8 or JSON, 5,000 digits, deep nesting
        reason = 'nested too deeply' if isinstance(e, RecursionError) else str(e)[:80]
        raise UserError(f'{path}: is not a microdiffusion checkpoint (not JSON: {reason})') \
            from None


def load_checkpoint(path, resuming=False, flag='--checkpoint', of_names=False):
    """(model, the training section or None): what sample and eval use is checked here, and
    what only --resume needs when resuming; of_names: refused if it is a model of text."""
    doc = read_json(path, flag)

    def need(condition, what):
        if not condition:
            raise UserError(f'{path}: not a valid microdiffusion checkpoint ({what})')
    need(isinstance(doc, dict) and doc.get('format') == FORMAT,
         f'not a JSON object whose "format" is "{FORMAT}"')
    version = doc.get('version')
    if not (type(version) is int and OLDEST <= version <= VERSION):
        found = 'has no version' if version is None else f'is of version {version!r:.20}'
        raise UserError(f'{path}: {found}; this build reads checkpoints of versions {OLDEST} to '
                        f'{VERSION}')
    config = doc.get('config')
    need(isinstance(config, dict), 'no "config"')
    name = doc.get('variant') if version == VERSION else older_variant(doc, version, need)
    need(name in variants.VARIANTS, f'"variant" must be one of {", ".join(variants.VARIANTS)}')
    kind = variants.VARIANTS[name]
    fields = {}
    for field in shape_fields(kind):
        fields[field] = config.get(field, getattr(variants.config_class(kind), field))
        need(fits(fields[field], LIMITS[field]), f'config {field} = {config.get(field)!r:.40}')
    cfg = variants.config_class(kind)(**fields)
    chars = list(doc['chars']) if isinstance(doc.get('chars'), str) else doc.get('chars')
    allowed = '\t\n' if issubclass(kind, variants.Text) else '\t'  # names print one a line
    need(isinstance(chars, list) and chars and all(
        isinstance(c, str) and len(c) == 1 and not unsafe(c, allowed) for c in chars)
        and len(set(chars)) == len(chars),
        '"chars" must list distinct single characters, no control characters but tab')
    tok = md.Tokenizer(chars)
    problem = too_large(kind, cfg, tok.vocab_size)
    need(not problem, f'config describes {problem}')
    shapes, params = kind.shapes(cfg, tok.vocab_size), doc.get('params')
    need(isinstance(params, dict) and set(params) == set(shapes),
         f'"params" must have exactly {", ".join(sorted(shapes))}')
    for matrix, (n_rows, n_columns) in shapes.items():
        need(isinstance(params[matrix], list) and len(params[matrix]) == n_rows and all(
            isinstance(row, list) and len(row) == n_columns and numbers(row, MAX_WEIGHT)
            for row in params[matrix]), f'{matrix} should be {n_rows} x {n_columns} finite '
             'numbers of at most 1e6')
    try:
        model = kind(cfg, tok, {matrix: [[md.Value(float(x)) for x in row] for row in rows]
                                for matrix, rows in params.items()})
    except ValueError as e:  # a rule of the model's own
        raise UserError(f'{path}: not a valid microdiffusion checkpoint (config: {e})') from None
    if model.lengths is not None:  # it draws its length first, from these
        lengths = model.lengths = doc.get('lengths')
        need(isinstance(lengths, list) and len(lengths) == cfg.block_size and numbers(
            lengths, 1) and lengths[0] == 0 and min(lengths[1:]) > 0 and abs(
            sum(lengths) - 1) < 1e-9, f'"lengths" must be {cfg.block_size} probabilities '
             'adding up to 1: 0 for the empty name, above 0 for every other length')
    if of_names and isinstance(model, variants.Text):
        raise UserError(f'{flag} {path}: is a model of running text; give a model of names')
    training = doc.get('training') if isinstance(doc.get('training'), dict) else None
    if resuming and training:
        check_training_state(training, model, version, need)
    return model, training


def older_variant(doc, version, need):
    """The variant of a version 1 or 2 checkpoint: its "config" named the kind of model, and
    a diffusion model on names without "lengths" was the padded block (version 2 says so in
    its training settings too; without either it is damaged, not another model)."""
    config, training = doc['config'], doc.get('training')
    kinds = {name: config.get(name, default) for name, default in (
        ('model', 'diffusion'), ('denoiser', 'transformer'), ('text', False))}
    for name, value in kinds.items():
        need(fits(value, LIMITS[name]), f'config {name} = {value!r:.40}')
    settings = training.get('settings') if isinstance(training, dict) else None
    padding = kinds['model'] == 'diffusion' and not kinds['text'] and 'lengths' not in doc
    if padding and version == 2:
        need(isinstance(settings, dict) and settings.get('padding') is True,
             '"lengths" is missing; a version-2 model that draws its length needs them')
    try:
        return variants.choose(padding=padding, **kinds)
    except ValueError as e:
        need(False, f'config: {e}')


def check_training_state(training, model, version, need):
    """need(...) all that --resume continues from, every setting within LIMITS. A setting an
    older version recorded that no longer shapes training is dropped; the kind of model it
    recorded must be the checkpoint's."""
    settings = training.get('settings')
    need(isinstance(settings, dict), '"training" must hold the run\'s "settings"')
    kind = type(model)
    if version < VERSION:  # its settings named the kind of model too: it must be this one
        settings.setdefault('model', 'diffusion')
        settings.setdefault('padding', settings['model'] == 'diffusion' and version == 1)
        try:
            same = variants.VARIANTS[variants.choose(**{name: settings.get(name, default) for
                                     name, default in variants.flags(kind).items()})] is kind
        except (ValueError, TypeError):
            same = False
        need(same, '"training" settings disagree with "config"')
    wanted = [f.name for f in fields(variants.config_class(kind)) + fields(Validation)]
    missing = sorted(set(wanted) - set(settings))
    need(not missing, f'"training" settings lack {", ".join(missing)}')
    training['settings'] = settings = {name: settings[name] for name in wanted}
    for name, value in settings.items():
        need(fits(value, LIMITS[name]), f'"training" setting {name} = {value!r:.40} is out of '
             'range')
    need(all(settings[name] == getattr(model.cfg, name) for name in shape_fields(kind)),
         '"training" settings disagree with "config"')
    n_params = len(md.flatten(model.params))
    step, history = training.get('step'), training.setdefault('history', [])
    smoothed = training.setdefault('smoothed', [0.0, 0.0])  # older checkpoints kept neither
    need(fits(step, (int, 0, settings['steps'])) and fits(training.get('adam_t'), (int, 0, 10**9))
         and isinstance(training.get('data_fingerprint'), str) and all(
             isinstance(training.get(key), list) and len(training[key]) == n_params and
             numbers(training[key], 1e12) for key in ('adam_m', 'adam_v')) and isinstance(
             smoothed, list) and len(smoothed) == 2 and numbers(smoothed, 1e12),
         f'"training" needs step, adam_t, data_fingerprint, adam_m and adam_v ({n_params:,} '
         'numbers each) and smoothed ([average, weight]), each in range')
    need(isinstance(history, list) and len(history) <= MAX_HISTORY and all(
        isinstance(row, list) and len(row) == 5 and fits(row[0], (int, 1, step))
        and numbers(row[1:3] + row[4:] + [x for x in row[3:4] if x is not None], 1e12)
        for row in history) and [row[0] for row in history] == sorted(r[0] for r in history),
        '"training" history must be rows of [step, loss, smoothed, validation, seconds] up '
        'to the step saved, in order')
