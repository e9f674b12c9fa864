"""Build hook only; all metadata lives in setup.cfg.

Ships the stdlib-only start-up hook (llada_xdlm_lm_eval_hook.py + its .pth) at the root of site-packages, so that
the plain `lm_eval --model xdlm` works after `pip install` and after `pip install -e`. setup.cfg cannot place a
.pth file: build_py copies it into regular wheels, and the editable wheel gets it beside setuptools' own
`__editable__` .pth (which sorts first, so the hook module is importable when our line runs).
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "llada_xdlm_lm_eval_hook.pth"


class BuildPyWithPth(build_py):
    """build_py that also copies the .pth file into the root of the build (and so of the wheel)."""

    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


class EditableWheelWithPth(editable_wheel):
    """editable_wheel whose wheel also holds the hook's .pth (setuptools only writes its own path entries)."""

    def _select_strategy(self, *args, **kwargs):
        return _WithPth(super()._select_strategy(*args, **kwargs))


class _WithPth:
    """Wraps setuptools' editable strategy: writes what it writes, plus the hook's .pth."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        with open(PTH, "rb") as f:
            wheel.writestr(PTH, f.read())

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self.strategy.__exit__(*exc)


setup(py_modules=["llada_xdlm_lm_eval_hook"],
      cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
