"""Out-of-order data waiting for the hole before it (RFC 9293 3.10.7.4,
"segments with higher beginning sequence numbers may be held").

Sequence numbers here are the connection's unwrapped ones (plain integers
that never wrap), so order is ``<``.  Pieces are kept sorted and never
overlap: what arrives again is cut to the parts not held yet (the first
copy wins, as RFC 9293 allows).  ``ranges`` gives the SACK blocks, the one
that grew last first (RFC 2018 4).
"""

from __future__ import annotations

import bisect

from wgpy.netstack.ip import Buffer


class Reassembly:
    __slots__ = ("_starts", "_pieces", "size", "_last")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._pieces: list[bytes] = []
        self.size = 0  # bytes held
        self._last = -1  # a sequence number inside the piece added last

    def __bool__(self) -> bool:
        return bool(self._starts)

    def add(self, seq: int, data: Buffer) -> None:
        """Hold ``data`` (starting at ``seq``, past the next expected byte)."""
        end = seq + len(data)
        if end <= seq:
            return
        starts, pieces = self._starts, self._pieces
        i = bisect.bisect_right(starts, seq) - 1
        if i >= 0 and starts[i] + len(pieces[i]) > seq:
            i_end = starts[i] + len(pieces[i])
            if i_end >= end:
                return  # held already
            data = memoryview(data)[i_end - seq :]
            seq = i_end
        i += 1
        # Fill the gaps between the pieces that follow, up to ``end``.
        while seq < end:
            nxt = starts[i] if i < len(starts) else end
            if nxt > seq:
                stop = min(nxt, end)
                chunk = bytes(memoryview(data)[: stop - seq])
                starts.insert(i, seq)
                pieces.insert(i, chunk)
                self.size += len(chunk)
                self._last = seq
                i += 1
                data = memoryview(data)[stop - seq :]
                seq = stop
                continue
            # A piece starts here: skip over it.
            skip_to = starts[i] + len(pieces[i])
            if skip_to >= end:
                break
            data = memoryview(data)[skip_to - seq :]
            seq = skip_to
            i += 1

    def pop(self, seq: int) -> bytes:
        """Take what is held from ``seq`` on without a hole (b"" when the next
        piece starts later); pieces wholly before ``seq`` are dropped."""
        starts, pieces = self._starts, self._pieces
        out: list[bytes] = []
        while starts and starts[0] <= seq:
            start = starts.pop(0)
            piece = pieces.pop(0)
            self.size -= len(piece)
            end = start + len(piece)
            if end > seq:
                out.append(piece[seq - start :])
                seq = end
        return b"".join(out)

    def ranges(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` (start, end) ranges held, each maximal, the one holding
        the last added piece first."""
        merged: list[tuple[int, int]] = []
        for start, piece in zip(self._starts, self._pieces, strict=True):
            end = start + len(piece)
            if merged and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        first = [r for r in merged if r[0] <= self._last < r[1]]
        rest = [r for r in reversed(merged) if not r[0] <= self._last < r[1]]
        return (first + rest)[:limit]
