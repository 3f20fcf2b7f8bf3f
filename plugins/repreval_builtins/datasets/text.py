"""``text_lines``: one text per line of a UTF-8 file, for text encoders."""

from __future__ import annotations

from collections.abc import Sequence

from repreval.api import DatasetSource, InputSpec, ReprevalError, TextSet, open_regular, shown

from .common import check_indices, existing_file, path_option

#: The largest text file read (bytes).
MAX_TEXT_BYTES = 256 * 2**20


class TextLines(DatasetSource):
    """Texts, one per non-blank line of a UTF-8 file (``path``, at most :data:`MAX_TEXT_BYTES`); surrounding
    whitespace is stripped. The model's tokenizer turns them into token ids."""

    name = "text_lines"

    def __init__(self, path):
        self.path = existing_file(path_option(path, "path"), "path", self.name)
        with open_regular(self.path, "text_lines: file") as handle:
            content = handle.read(MAX_TEXT_BYTES + 1)
        if len(content) > MAX_TEXT_BYTES:
            raise ReprevalError(
                f"text_lines: {shown(self.path)} is larger than {MAX_TEXT_BYTES // 2**20} MiB",
                fix="split the texts into smaller files",
            )
        try:
            lines = content.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ReprevalError(
                f"text_lines: {shown(self.path)} is not UTF-8 text ({exc.reason})", fix="save the file as UTF-8"
            ) from None
        self.texts = [line.strip() for line in lines if line.strip()]
        if not self.texts:
            raise ReprevalError(f"text_lines: {shown(self.path)} has no non-blank line", fix="add one text per line")

    def size(self, target: InputSpec) -> int:
        return len(self.texts)

    def load(self, indices: Sequence[int], target: InputSpec) -> TextSet:
        return TextSet([self.texts[i] for i in check_indices(indices, len(self.texts))])

    def describe(self) -> str:
        return f"text_lines {self.path} ({len(self.texts):,} texts)"
