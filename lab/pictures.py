"""Pictures: the training curve as text and as SVG, and the reverse process as an animated
SVG. Every SVG begins with the lab's mark, so that only its own pictures are ever replaced."""

from html import escape

from lab.files import PICTURE_HEAD
from lab.terminal import marks


def curve_chart(history, unit='name', width=60, height=10):
    """A text chart of a run's history: the smoothed loss (·) and validation (o) by step."""
    points = [(row[0], row[2], '·') for row in history]
    points += [(row[0], row[3], 'o') for row in history if row[3] is not None]
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    last, span = history[-1][0], (high - low) or 1.0
    grid = [[' '] * width for _ in range(height)]
    for step, value, mark in points:
        x, y = round((step / last) * (width - 1)), round((high - value) / span * (height - 1))
        grid[y][x] = 'o' if grid[y][x] == 'o' else mark
    return [f'{high - span * r / (height - 1):7.2f} |' + ''.join(row)
            for r, row in enumerate(grid)] + [
        '        +' + '-' * width, f'         step 0{str(last):>{width - 6}}',
        f'         · smoothed loss   o validation (nats per {unit})']


def svg(width, height, body, font='font-family="sans-serif" font-size="12"'):
    """A whole SVG document: the lab's mark, a white page, the body."""
    return (f'{PICTURE_HEAD}<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" {font}><rect width="{width}" height="{height}" fill="white"/>'
            f'{body}</svg>\n')


def curve_svg(history, unit='name'):
    """The same chart as a self-contained SVG picture."""
    return chart_svg([('smoothed loss', [(row[0], row[2]) for row in history], 'line'),
                      ('validation', [(row[0], row[3]) for row in history
                                      if row[3] is not None], 'dots')],
                     ('step', '{:.0f}'), (f'nats per {unit}', '{:.2f}'))


COLOURS = ('#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
           '#7f7f7f', '#bcbd22', '#17becf')


def chart_svg(series, x_axis, y_axis, colours=None, w=600, h=420, pad=70):
    """Series of points as a picture: each (label, points, 'line', 'dots' or 'both'[, dashed])
    in a colour (COLOURS[colours[k]]; by default one each), its label in the legend at the
    right; each axis, (title, format), spans all the points."""
    xs = [x for _, points, *_ in series for x, _ in points]
    ys = [y for _, points, *_ in series for _, y in points]
    x0, x1, y0, y1, top, right = min(xs), max(xs), min(ys), max(ys), 30, w - 30

    def xy(x, y):
        return (pad + (x - x0) / ((x1 - x0) or 1) * (right - pad),
                h - pad - (y - y0) / ((y1 - y0) or 1) * (h - pad - top))
    (x_title, x_format), (y_title, y_format) = x_axis, y_axis
    middle = (top + h - pad) / 2
    body = [f'<path d="M{pad} {top}V{h - pad}H{right}" fill="none" stroke="black"/>',
            f'<text x="{pad}" y="{h - pad + 16}">{x_format.format(x0)}</text>',
            f'<text x="{right}" y="{h - pad + 16}" text-anchor="end">{x_format.format(x1)}'
            f'</text><text x="{(pad + right) / 2}" y="{h - pad + 36}" text-anchor="middle">'
            f'{escape(x_title)}</text>',
            f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">{y_format.format(y0)}</text>',
            f'<text x="{pad - 4}" y="{top + 10}" text-anchor="end">{y_format.format(y1)}</text>',
            f'<text x="18" y="{middle}" text-anchor="middle" transform="rotate(-90 18 {middle})">'
            f'{escape(y_title)}</text>']
    for k, (label, points, style, *dashed) in enumerate(series):
        colour = COLOURS[(colours[k] if colours else k) % len(COLOURS)]
        stroke = f'stroke="{colour}" stroke-width="1.5"' + ' stroke-dasharray="6,4"' * any(dashed)
        if style != 'dots':
            body.append('<polyline points="%s" fill="none" %s/>' % (
                ' '.join('%.1f,%.1f' % xy(x, y) for x, y in points), stroke))
        if style != 'line':
            body += ['<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (*xy(x, y), colour)
                     for x, y in points]
        body.append((f'<path d="M{w + 9} {top + 20 * k - 4}a3 3 0 1 0 6 0a3 3 0 1 0 -6 0" '
                     f'fill="{colour}"/>' if style == 'dots' else  # a dot, as the points are
                     f'<path d="M{w} {top + 20 * k - 4}h24" {stroke}/>')
                    + f'<text x="{w + 30}" y="{top + 20 * k}" fill="{colour}">{escape(label)}'
                    '</text>')
    return svg(w + 40 + 7 * max(len(label) for label, *_ in series), h, ''.join(body))


def frames(trace, tok, size, start=()):
    """A name's states as pictures show them, from `start` (a pattern's fixed beginning, blanks
    after it) through each step of its trace, all on `size` positions; whatever follows the
    first PAD is not part of the name, so it is drawn as PAD."""
    states = [list(start) + [tok.MASK] * (size - len(start))] + [t for *_, t in trace]
    ends = [state.index(tok.PAD) if tok.PAD in state else len(state) for state in states]
    return [state[:end] + [tok.PAD] * (size - end) for state, end in zip(states, ends)]


def reverse_svg(rows, tok, seconds_per_frame=0.25):
    """An animated SVG of the reverse process: each row a name's frames, shown in turn by
    SVG's own animation (no script), the last one held, then again from the start."""
    mask_mark, pad_mark = marks(tok)
    count = max(len(row) for row in rows) + 6  # the finished names stay a while
    width, height, groups = 40 + 14 * len(rows[0][0]), 30 + 24 * len(rows), []
    for k in range(count):
        texts = ''.join(f'<text x="20" y="{30 + 24 * r}">' + ''.join(
            f'<tspan fill="#bbb">{escape(mask_mark)}</tspan>' if t == tok.MASK else
            f'<tspan fill="#ddd">{escape(pad_mark)}</tspan>' if t == tok.PAD else
            escape(tok.chars[t]) for t in row[min(k, len(row) - 1)]) + '</text>'
            for r, row in enumerate(rows))
        # frame k is visible from k/count to (k + 1)/count of the loop; the last to its end
        times = [0, k / count, (k + 1) / count][(k == 0):3 - (k == count - 1)]
        shown = ['hidden', 'visible', 'hidden'][(k == 0):3 - (k == count - 1)]
        groups.append(f'<g visibility="hidden"><animate attributeName="visibility" '
                      f'calcMode="discrete" values="{";".join(shown)}" keyTimes="'
                      f'{";".join(f"{x:.4g}" for x in times)}" '
                      f'dur="{count * seconds_per_frame:.2f}s" repeatCount="indefinite"/>'
                      f'{texts}</g>')
    return svg(width, height, ''.join(groups),
               'font-family="monospace" font-size="20" xml:space="preserve"')
