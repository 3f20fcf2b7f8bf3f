"""Built-in datasets: ``digits``, ``mnist`` (IDX files), ``image_folder``, ``image_files``, ``noise`` and, for
text encoders, ``text_lines``.

Every source decodes only the images asked for (``mnist`` and ``digits`` read their arrays once and
keep them). :func:`read_idx` reads any IDX file for other plugins.
"""

from __future__ import annotations

from repreval.api import hookimpl

from .embedded import Digits, Noise
from .files import ImageFiles, ImageFolder, read_image
from .idx import Mnist, read_idx
from .text import TextLines

__all__ = ["Digits", "Noise", "ImageFiles", "ImageFolder", "Mnist", "TextLines", "read_idx", "read_image"]


@hookimpl
def register_datasets(register):
    """Register ``digits``, ``mnist``, ``image_folder``, ``image_files``, ``noise`` and ``text_lines``."""
    for dataset in (Digits, Mnist, ImageFolder, ImageFiles, Noise, TextLines):
        register(dataset)
