"""Import-time fixes the upstream model code needs on current torchvision.

basicsr 1.4.2 (imported by gfpgan) still imports
``torchvision.transforms.functional_tensor``, which torchvision removed after
0.16. The functions it wants live on in ``_functional_tensor``; registering the
old name once, before gfpgan is imported, keeps site-packages untouched.
"""

import sys


def install_torchvision_alias() -> None:
    legacy = "torchvision.transforms.functional_tensor"
    if legacy in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (an old torchvision still has it)
    except ImportError:
        from torchvision.transforms import _functional_tensor

        sys.modules[legacy] = _functional_tensor


install_torchvision_alias()
