"""The one compiled part: the sampler's ticker in C (`supervisor/sensing/_ticker.c`), built where a
compiler and the Python headers exist. Without them the build goes on (`optional`) and the
sampler runs its pure-Python ticker. Everything else is configured in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("supervisor.sensing._ticker", ["supervisor/sensing/_ticker.c"],
                             optional=True)])
