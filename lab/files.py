"""The files the lab writes, checkpoints and pictures: whole or not at all, never over anything
but a file of its own, and one training run at a time on a checkpoint."""

import contextlib
import json
import os
import re
import tempfile

from lab.terminal import UserError

try:
    import fcntl  # file locks, for one writer per checkpoint (not on Windows)
except ImportError:
    fcntl = None

# How the lab knows its own files: a checkpoint is JSON whose "format" is FORMAT; a picture
# begins with PICTURE_HEAD; a lock holds LOCK_NOTE. Only those are ever replaced or removed.
FORMAT = 'microdiffusion checkpoint'
PICTURE_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<!-- drawn by microdiffusion -->\n'
LOCK_NOTE = b'microdiffusion: a training run on this checkpoint holds this lock\n'
MAX_CHECKPOINT = 32 * 2**20  # 3 x 200,000 numbers of 26 characters, 100,000 history rows
WRITTEN = json.dumps({'format': FORMAT})[:-1].encode()  # a checkpoint's first bytes, as written


def write_atomic(path, text, flag=None):
    """Write a temporary file beside the target, then rename it over the target: a crash at
    any moment leaves the old file or the new one, never half of one. A symlink is followed
    (its target replaced, the link kept); an existing file keeps its mode. With a flag (a
    picture's, written after the work), a failure is a UserError that says so."""
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode & 0o7777 if os.path.exists(target) else 0o644
        fd, tmp = temporary_beside(target)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        if flag is None:
            raise
        raise UserError(f'{flag} {path}: could not be written ({e.strerror or e}); the rest '
                        'of the work is done') from None


def temporary_beside(target):
    return tempfile.mkstemp(dir=os.path.dirname(target),
                            prefix='.' + os.path.basename(target) + '.', suffix='.tmp')


def remove_stale_temporaries(path):
    """The temporary files a save killed mid-way (kill -9) left beside a checkpoint: only the
    holder of its lock saves it, so any that are there are stale."""
    folder, name = os.path.split(os.path.realpath(path))
    stale = re.compile(re.escape(f'.{name}.') + r'[a-z0-9_]{8}\.tmp')  # mkstemp's names
    for entry in filter(stale.fullmatch, os.listdir(folder)):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, entry))


def holds_ours(target, noun):
    """Whether an existing file is the lab's own checkpoint or picture (or empty)."""
    with open(target, 'rb') as f:
        if noun == 'picture':
            head = f.read(len(PICTURE_HEAD))
            return not head or head == PICTURE_HEAD.encode()
        raw = f.read(len(WRITTEN))
        if raw == WRITTEN:  # how save_checkpoint begins every file: no need to parse 30 MB
            return True
        raw += f.read(MAX_CHECKPOINT + 1)
    try:
        doc = json.loads(raw) if raw else {'format': FORMAT}
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get('format') == FORMAT


def check_outputs(outputs, inputs=()):
    """Before any work: no output (flag, path) the same file as another or as an input, by any
    name; each one a file we may write, replacing nothing but a checkpoint or a picture."""
    seen = [(flag, path) for flag, path in inputs if path is not None]
    for flag, path in [(flag, path) for flag, path in outputs if path is not None]:
        for other, other_path in seen:
            if os.path.realpath(path) == os.path.realpath(other_path) or (os.path.exists(
                    path) and os.path.exists(other_path) and os.path.samefile(path, other_path)):
                raise UserError(f'{flag} {path}: is the same file as {other} {other_path}; '
                                f'choose another {flag}')
        seen.append((flag, path))
        noun, target = 'checkpoint' if flag == '--checkpoint' else 'picture', os.path.realpath(path)
        there = os.path.exists(target)
        problem = ('is a folder' if path.endswith(('/', os.sep)) or os.path.isdir(target) else
                   'is not a regular file' if there and not os.path.isfile(target) else None)
        if problem:
            raise UserError(f'{flag} {path}: {problem}; give a file name for the {noun}')
        if there and not os.stat(target).st_mode & 0o222:
            raise UserError(f'{flag} {path}: is read-only; make it writable or choose another '
                            f'{flag}')
        try:
            ours = not there or holds_ours(target, noun)
            fd, tmp = temporary_beside(target)  # write_atomic's very name: too long fails here
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise UserError(f'{flag} {path}: cannot write a {noun} there ({e.strerror}); '
                            f'choose another {flag}') from None
        if not ours:
            raise UserError(f'{flag} {path}: holds something other than a {noun} of this lab\'s; '
                            f'choose another {flag}, or remove it first')


@contextlib.contextmanager
def one_writer(checkpoint):
    """A lock beside the checkpoint while training writes it: a second run on the same file is
    refused while the first lives. A process's lock ends with it: a killed run's never blocks,
    and the next run removes its file; a file of that name that is not a lock stays."""
    if fcntl is None:
        yield
        return
    target = os.path.realpath(checkpoint)
    path = os.path.join(os.path.dirname(target), '.' + os.path.basename(target) + '.lock')
    while True:
        try:
            try:
                fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                fd, created = os.open(path, os.O_RDONLY), False
        except FileNotFoundError:  # removed between the two opens: try again
            continue
        except OSError as e:
            raise UserError(f'{path}: cannot lock {checkpoint} ({e.strerror})') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f'{checkpoint}: another run is training it now; wait for it to end, '
                            'or choose another --checkpoint') from None
        if os.path.exists(path) and os.path.samestat(os.fstat(fd), os.stat(path)):
            break  # else its last holder removed it as we opened it: lock the new one
        os.close(fd)
    try:
        if created:
            os.write(fd, LOCK_NOTE)
        ours = created or os.pread(fd, len(LOCK_NOTE) + 1, 0) == LOCK_NOTE
    except OSError:
        ours = created
    try:
        yield
    finally:
        if ours:
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)
