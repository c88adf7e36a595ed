"""The compiled parts, built where a compiler and the Python headers exist: the sampler's
ticker (`supervisor/sensing/_ticker.c`) and the analysis' per-sample fold
(`snapshots/_fold.c`). Without them the build goes on (`optional`) and the sampler runs its
pure-Python ticker, the analysis its pure-Python fold (`snapshots/fold.py`), with the same
results. Everything else is configured in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("supervisor.sensing._ticker", ["supervisor/sensing/_ticker.c"],
                             optional=True),
                   Extension("snapshots._fold", ["snapshots/_fold.c"], optional=True)])
