"""Build hook only; all metadata lives in setup.cfg.

Ships the stdlib-only start-up hook (llada_xdlm_lm_eval_hook.py + its .pth) at the wheel root so that the plain
`lm_eval --model xdlm` works after `pip install`. setup.cfg cannot place a .pth file, hence this build_py override.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "llada_xdlm_lm_eval_hook.pth"


class BuildPyWithPth(build_py):
    """build_py that also copies the .pth file into the root of the build (and so of the wheel)."""

    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


setup(py_modules=["llada_xdlm_lm_eval_hook"], cmdclass={"build_py": BuildPyWithPth})
