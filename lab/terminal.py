"""What the lab says, and where: results on stdout, progress and messages on stderr, one line
for a mistake the user can fix, and the reverse process drawn in place on a terminal."""

import contextlib
import os
import re
import shutil
import sys
import time
import unicodedata


ESCAPES = re.compile('\033\\[[0-9;?]*[A-Za-z]')  # what a terminal draws nothing for


class UserError(Exception):
    """Something the user can fix (a path, a file, a flag): reported in one line, no traceback."""


class Interrupted(Exception):
    """A signal stopped training: args are (signal number, the step saved or what to say)."""


def say(text, end='\n'):
    """Text on stderr; if stderr has gone away (a closed pipe), the work goes on without it."""
    try:
        print(text, end=end, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):  # so that nothing, even Python at exit, fails on it
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def out(text, end='\n'):
    """Results on stdout, or one clear error if stdout cannot take them."""
    try:
        print(text, end=end, flush=True)
    except UnicodeEncodeError as e:
        raise UserError(f'stdout cannot show {e.object[e.start:e.end]!r} in its encoding, '
                        f'{e.encoding}; set PYTHONIOENCODING=utf-8') from None
    except BrokenPipeError:  # the reader left (`| head`): main ends quietly
        raise
    except OSError as e:
        raise UserError(f'stdout cannot be written ({e.strerror or e})') from None


def unsafe(char, allowed):
    """A control character (but those allowed) or half a surrogate pair: unfit to print."""
    return char not in allowed and unicodedata.category(char) in ('Cc', 'Cs')


def on_terminal():
    """Whether stderr is a terminal that can redraw in place (TERM=dumb cannot)."""
    return sys.stderr.isatty() and os.environ.get('TERM') != 'dumb'


class Progress:
    """One status line on stderr: how far, the caller's figures, the speed and the time left.
    Rewritten in place on a terminal; elsewhere, a line at every tenth and every minute."""

    def __init__(self, total, unit, start=0):
        self.total, self.unit, self.start = total, unit, start
        self.live, self.shown = on_terminal(), False
        self.began = self.said = time.perf_counter()

    def update(self, done, detail='', force=False):
        now = time.perf_counter()
        speed = (done - self.start) / max(now - self.began, 1e-9)
        left = int((self.total - done) / max(speed, 1e-9))
        line = (f'{self.unit} {done}/{self.total}  {detail}{"  " if detail else ""}{speed:.1f} '
                f'{self.unit}s/s  {f"{left // 60}m{left % 60:02d}s" if left >= 60 else f"{left}s"}'
                ' left')
        if self.live:
            self.shown = True
            say('\r' + line + '\033[K', end='')
        elif force or done == self.total or done % max(1, self.total // 10) == 0 or \
                now - self.said >= 60:
            self.said = now
            say(line)

    def finish(self):
        if self.shown:
            self.shown = False
            say('')


def marks(tok):
    """How traces draw (MASK, PAD): '_' and '.', or other marks where the data has those."""
    return ('_' if '_' not in tok.chars else '▒'), ('.' if '.' not in tok.chars else '·')


def show(tokens, tok, colour=False):
    """A sequence as text, MASK and PAD drawn as marks(tok), dimmed on a terminal if colour."""
    mask_mark, pad_mark = marks(tok)
    if colour:
        mask_mark, pad_mark = f'\033[2;33m{mask_mark}\033[0m', f'\033[2m{pad_mark}\033[0m'
    return ''.join([mask_mark if t == tok.MASK else pad_mark if t == tok.PAD else tok.chars[t]
                    for t in tokens])


def animate(block, fps):
    """Draw a block of rows in place on stderr, frame by frame, each row one list of painted
    frames per model side by side, a finished row keeping its last frame. A row is one line
    (a newline in running text drawn as ⏎, a tab as →) or as many as it wraps onto; the
    terminal is given back as it was whatever stops it (a signal: KeyboardInterrupt)."""
    columns, lines = max(1, shutil.get_terminal_size().columns), 0  # lines: the last frame's
    say('\033[?25l', end='')  # hide the cursor while drawing
    try:
        for k in range(max(len(frames) for row in block for frames in row)):
            rows = ['    '.join(f[min(k, len(f) - 1)] for f in row).replace('\n', '⏎')
                    .replace('\t', '→') for row in block]
            say(f'\033[{lines}A' * bool(lines) + ''.join(  # back to the block's first line
                '\r\033[K' + row + '\n' for row in rows), end='')
            lines = sum(-(-len(ESCAPES.sub('', row)) // columns) or 1 for row in rows)
            time.sleep(1 / fps)
    finally:
        say('\033[0m\033[?25h', end='')  # the terminal as it was
