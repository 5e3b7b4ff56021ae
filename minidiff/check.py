"""``python -m minidiff.check NAME``: check your answer to an exercise (see lessons/README.md).

    python -m minidiff.check --list                      the exercises, with the lesson each belongs to
    python -m minidiff.check add_noise                   check lessons/exercises/add_noise.py
    python -m minidiff.check add_noise --file my.py      check the function add_noise defined in my.py

The checkers live in minidiff/course/.
"""

from minidiff.course import main

if __name__ == "__main__":
    raise SystemExit(main())
