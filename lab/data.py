"""Reading what the user brings: a names list or running text, each checked line by line, and
split the same way every time into what trains and what is held out."""

import contextlib
import hashlib
import os
import random

import microdiffusion as md
from lab.settings import LIMITS, TEXT_HELD_OUT, Validation, fits
from lab.terminal import UserError, unsafe
from variants import Text

MAX_DATA = 16 * 2**20  # names.txt is 0.2 MB
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # microdiffusion.py's
DEFAULT_DATA = os.path.join(ROOT, 'names.txt')


def read_file(path, what, limit=MAX_DATA):
    """A file's bytes, at most `limit` of them, or a UserError that says why not."""
    try:
        with open(path, 'rb') as f:
            raw = f.read(limit + 1)
    except OSError as e:
        reason = ('no such file' if isinstance(e, FileNotFoundError) else 'is a folder' if
                  isinstance(e, IsADirectoryError) else f'cannot be read ({e.strerror})')
        raise UserError(f'{path}: {reason}; give {what}') from None
    if len(raw) > limit:
        raise UserError(f'{path}: is larger than {limit // 2**20} MB, more than the lab reads')
    return raw


def read_names(path, longest=LIMITS['block_size'][2] - 1):
    """The names in a UTF-8 file, one a line (\\n, \\r\\n or \\r), as md.name_of reads a line;
    every problem is a UserError that names the line."""
    names = []
    for number, line in enumerate(read_file(path, 'a text file with one name per line')
                                  .splitlines(), start=1):
        try:
            name = md.name_of(line.decode('utf-8'))
        except UnicodeDecodeError:
            raise UserError(f'{path}, line {number}: is not UTF-8 text; save it as UTF-8') from None
        shown = name if len(name) <= 30 else name[:27] + '...'
        if len(name) > longest:
            raise UserError(f'{path}, line {number}: {shown!r} has {len(name)} characters, more '
                            f'than the {longest} a name can have; shorten or remove it')
        check_characters(path, name, '\t', number)
        names += [name] if name else []
    if not names:
        raise UserError(f'{path}: has no names (it is empty or only blank lines)')
    return names


def check_characters(path, text, allowed, line=None):
    """A UserError naming the first control character in text (but those allowed), if any."""
    bad = next((c for c in text if unsafe(c, allowed)), None)
    if bad is not None:
        line = line or text.count('\n', 0, text.index(bad)) + 1
        what = ('a control character, not text (is it UTF-16?); save it as UTF-8' if bad == '\0'
                else f'a control character, U+{ord(bad):04X}, not text; remove it')
        raise UserError(f'{path}, line {line}: holds {what}')


def read_text(path):
    """A UTF-8 file as one stream of characters, line ends made \\n, no byte-order mark."""
    try:
        text = read_file(path, 'a UTF-8 text file').decode('utf-8')
    except UnicodeDecodeError as e:
        raise UserError(f'{path}: byte {e.start} is not UTF-8 text; save it as UTF-8') from None
    text = text.replace('\ufeff', '').replace('\r\n', '\n').replace('\r', '\n')
    check_characters(path, text, '\t\n')
    return text


def read_data(path, kind, cfg):
    """Running text, or names that fit a model of this class."""
    return read_text(path) if issubclass(kind, Text) else read_names(path, kind.longest(cfg))


def split_data(data, kind, cfg, val_size):
    """(what trains, what is held out), depending only on the data: up to val_size distinct
    names (at most a tenth) drawn with a fixed seed, every copy of them left out of training;
    running text cut before its last tenth, which is scored in whole windows."""
    if issubclass(kind, Text):
        cut = len(data) - max(cfg.block_size, int(len(data) * TEXT_HELD_OUT))
        return data[:cut], windows(data[cut:], cfg.block_size)
    distinct = sorted(set(data))
    held_out = random.Random(0).sample(distinct, min(val_size, len(distinct) // 10))
    held = set(held_out)
    return [n for n in data if n not in held], held_out


def windows(text, size):
    """The text cut into whole windows of `size` characters (what is left over is not)."""
    return [text[i:i + size] for i in range(0, len(text) - size + 1, size)]


def fingerprint(data):
    """A short hash of the training names or text, so --resume can refuse different data."""
    return hashlib.sha256((data if isinstance(data, str) else '\n'.join(data)).encode(
        'utf-8')).hexdigest()[:16]


def training_split(model, state, data, checkpoint):
    """(what trained, what was held out, path) of the data a checkpoint was trained on: `data`
    if given, else the file its training section names, if that is still the same data."""
    state = state or {}
    settings = state.get('settings') if isinstance(state.get('settings'), dict) else {}
    val_size = settings.get('val_size')
    val_size = val_size if fits(val_size, LIMITS['val_size']) else Validation.val_size
    kind = type(model)
    if data:
        return (*split_data(read_data(data, kind, model.cfg), kind, model.cfg, val_size), data)
    path = state.get('data')
    path = path if isinstance(path, str) and os.path.isfile(path) else DEFAULT_DATA
    with contextlib.suppress(UserError):
        train_names, held_out = split_data(read_data(path, kind, model.cfg), kind, model.cfg,
                                           val_size)
        if fingerprint(train_names) == state.get('data_fingerprint'):
            return train_names, held_out, path
    raise UserError(f'{checkpoint}: the data it was trained on is not at hand ({path} is not '
                    'it); pass --data FILE')
