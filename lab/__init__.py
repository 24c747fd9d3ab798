"""The lab around microdiffusion.py's algorithm: `python microdiffusion.py [command]` runs
main() here. One module a job:

    cli.py         the command line: each command's flags, and main()
    training.py    the train command: the lesson's train_step with workers, signals,
                   validation, progress and saving
    sampling.py    the sample command: names, patterns, traces, animation; running text
    reports.py     samples against the data, eval, forward and bench
    frontier.py    the frontier command: samplers' new names, scored against their share
    checkpoint.py  the checkpoint format, saved and loaded, every field checked
    files.py       writing files whole, replacing only the lab's own, one writer at a time
    workers.py     the same results from one process or several
    data.py        reading names and running text, splitting off what is held out, and
                   finding the data a checkpoint was trained on
    settings.py    what every setting may be, and what the lab takes on
    pictures.py    the training curve, the frontier and the reverse process, as SVG
    terminal.py    stdout and stderr: results, progress, one-line errors, animation

The lesson never imports the lab: the lab calls it through train_step (one seam), handing it
the way to spread a batch's names over processes, and through its Model's methods.
"""

from lab.cli import main  # noqa: F401  (what microdiffusion.py runs)
