"""Template renders in a kernel sandbox: one confined subprocess per render.

`runner.run` (parent) has the render server (`forkserver.py`) fork `child.main` with the checkout, the answers and an empty box
(`box/out` for copier's output, `box/tmp` for its scratch files); the child confines itself
(`confine.py`) before it reads anything of the template.

Bindings, and why:
- `landlock` (PyPI): the only Python binding of the Landlock syscalls; pure ctypes, no build
  step, small enough to read in full. Its ruleset handles filesystem rights only: `confine.py`
  creates the ruleset with the kernel's whole attr (TCP rights, ABI 6 scopes) and uses the
  binding's lower layer (`landlock.plumbing`) for the rest.
- `pyseccomp` (PyPI): ctypes over the system's libseccomp2 with the API of libseccomp's own
  Python bindings (which are not on PyPI); no compiler needed in the image.
"""

from projectgen.generation.sandbox.limits import Limits
from projectgen.generation.sandbox.runner import RenderCancelled, SandboxKilled, run, start_server

__all__ = ["Limits", "RenderCancelled", "SandboxKilled", "run", "start_server"]
