"""Chunked, bounded-memory access to a subset of a dataset's training rows."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from miniunlearn import distributed
from miniunlearn.core.progress import rows_read as report_rows

T = TypeVar("T")
DEFAULT_CHUNK_ROWS = 8192
# Below this many bytes a float64 copy of an index subset is materialised once, so repeated
# passes (training, refine passes) read contiguous memory instead of gathering every time.
MATERIALIZE_BYTES = 2 << 30
# Squared features (float32, for Hessian diagonals) are kept only up to this size; a larger set squares
# each chunk into a reused buffer at every pass instead
SQUARES_BYTES = 1 << 30
# The same bound for a float32 copy of the features (products whose rounding a float64 product checks later);
# a larger set casts each chunk afresh
SINGLE_BYTES = 1 << 30


class _Float32Image:
    """A float32 image of a held set's features (X's shape), each chunk written by ``fill(rows, out)`` once, on
    first use: its pages are only backed once written, and a view handed out earlier never sees a row rewritten
    (a process of a distributed run touches only its own chunks)."""

    def __init__(self, fill: Callable[[torch.Tensor, torch.Tensor], Any]):
        self.fill = fill
        self.tensor: torch.Tensor | None = None
        self.written: set[int] = set()
        self.lock = threading.Lock()

    def rows(self, X: torch.Tensor, chunk_rows: int, start: int, stop: int) -> torch.Tensor:
        with self.lock:
            if self.tensor is None:
                self.tensor = torch.empty(X.shape, dtype=torch.float32)
            for chunk in range(start // chunk_rows, -(-stop // chunk_rows)):
                if chunk not in self.written:
                    rows = slice(chunk * chunk_rows, min((chunk + 1) * chunk_rows, X.shape[0]))
                    self.fill(X[rows], self.tensor[rows])
                    self.written.add(chunk)
        return self.tensor[start:stop]


class Rows:
    """The rows ``ids`` of ``(X, y)`` (all rows when ``ids`` is None), served in fixed chunks.

    Chunk boundaries depend only on ``chunk_rows``, never on the number of workers, and
    :meth:`map_reduce` sums per-chunk results in chunk order, so a result is bitwise the
    same for 1 or N workers.

    Across processes (:mod:`miniunlearn.distributed`, started by torchrun) each process sums
    its contiguous block of the same chunk list (:meth:`local_chunk_bounds`) and the partial
    sums are all-reduced; every process must then make the same sequence of sums.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, ids: np.ndarray | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, workers: int = 1, materialize: bool = True):
        self.X_source = X
        self.y_source = y
        self.ids = None if ids is None else np.asarray(ids, dtype=np.int64)
        self.chunk_rows = int(chunk_rows)
        self.workers = max(1, int(workers))
        self.rows_read = 0  # for pass accounting: rows touched by sweeps so far
        self._X = None
        self._y = None
        self._squares = _Float32Image(squares_in_float32)
        self._single = _Float32Image(lambda X, out: out.copy_(X))
        n = self.n_served = len(y) if self.ids is None else len(self.ids)  # the rows the chunks serve
        in_memory = not isinstance(X, np.memmap) and X.dtype == np.float64
        # The copy is made on first access (a Rows used only to count passes never pays it);
        # ``materialize=False`` gathers every chunk afresh instead (for a single sweep).
        self._pending = materialize and in_memory and (self.ids is None or n * X.shape[1] * 8 <= MATERIALIZE_BYTES)
        self._lock = threading.Lock()

    def _materialized(self) -> bool:
        if self._pending:
            with self._lock:
                if self._pending:
                    X_sel = self.X_source if self.ids is None else self.X_source[self.ids]
                    y_sel = self.y_source if self.ids is None else self.y_source[self.ids]
                    self._X = torch.from_numpy(np.ascontiguousarray(X_sel))
                    self._y = torch.from_numpy(np.ascontiguousarray(y_sel, dtype=np.int64))
                    self._pending = False
        return self._X is not None

    def __len__(self) -> int:
        return self.n_served

    @property
    def n_features(self) -> int:
        return int(self.X_source.shape[1])

    def chunk_bounds(self) -> list[tuple[int, int]]:
        n = self.n_served
        return [(s, min(s + self.chunk_rows, n)) for s in range(0, n, self.chunk_rows)]

    def local_chunk_bounds(self) -> list[tuple[int, int]]:
        """This process's contiguous block of :meth:`chunk_bounds` (all of them in one process).

        A process whose block is empty gets one empty chunk ``(0, 0)``, so that its partial
        sum still has the right shape (zeros) for the all-reduce.
        """
        return list(distributed.shard(self.chunk_bounds())) or [(0, 0)]

    def chunk(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``start:stop`` of this set as float64 / int64 tensors."""
        if self._materialized():
            return self._X[start:stop], self._y[start:stop]
        if self.ids is None:
            X = np.asarray(self.X_source[start:stop], dtype=np.float64)
            y = np.array(self.y_source[start:stop], dtype=np.int64)  # a copy: memmaps are read-only
        else:
            sel = self.ids[start:stop]
            X = np.asarray(self.X_source[sel], dtype=np.float64)
            y = np.asarray(self.y_source[sel], dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(y)

    def squares(self, start: int, stop: int) -> torch.Tensor | None:
        """The squared features of rows ``start:stop`` in float32, or None for a set not held in memory
        or whose squares would exceed :data:`SQUARES_BYTES` (its caller squares the chunk it has).

        A set held in memory squares each chunk once, on first use, and keeps it (at most half the
        memory of its float64 copy; a process of a distributed run touches only its own chunks): a
        solver that needs a Hessian diagonal at every iterate then reads 4 bytes per feature instead of
        squaring 8 into a fresh buffer (on Fashion-MNIST's retained rows, 6 ms a pass instead of 40).
        Float32 is enough for what reads them: a diagonal preconditioner.
        """
        if not self._materialized() or self._X.numel() * 4 > SQUARES_BYTES:
            return None
        return self._squares.rows(self._X, self.chunk_rows, start, stop)

    def single(self, start: int, stop: int) -> torch.Tensor:
        """The features of rows ``start:stop`` in float32 (single precision): kept once cast for a set held in
        memory up to :data:`SINGLE_BYTES` (:attr:`keeps_single`), else cast afresh. For products whose rounding
        something checks later: on p = 100,100's rows a float32 product took 0.15 s against 0.29 s in float64."""
        if self.keeps_single and self._materialized():
            return self._single.rows(self._X, self.chunk_rows, start, stop)
        return self.chunk(start, stop)[0].to(torch.float32)

    @property
    def keeps_single(self) -> bool:
        """Whether :meth:`single` keeps its float32 rows (a set held in memory, within :data:`SINGLE_BYTES`); a
        set that does not casts every chunk at every float32 pass, which such a pass does not repay."""
        held = self._pending or self._X is not None
        return held and self.n_served * self.n_features * 4 <= SINGLE_BYTES

    def left_out_in(self, start: int, stop: int) -> torch.Tensor | None:
        """Positions, within chunk ``start:stop``, of rows that every sum must leave out (:class:`RowsWithout`);
        None: none."""
        return None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All rows at once (only for sets that fit in memory)."""
        if self._materialized():
            return self._X, self._y
        return self.chunk(0, len(self))

    def map_reduce(self, fn: Callable[[torch.Tensor, torch.Tensor], T],
                   reduce: Callable[[Sequence[T]], T] | None = None) -> T:
        """Apply ``fn(X_chunk, y_chunk)`` to every chunk and sum the results in chunk order.

        Across processes each one sums its own block of chunks and the blocks' sums are
        all-reduced (``sum_k sum_{j in block k} fn(chunk j)``). A custom ``reduce`` (e.g. a
        concatenation of per-row values) cannot be all-reduced: then every chunk runs here.
        One call is one pass over the rows (counted in ``rows_read``).
        """
        split = reduce is None and distributed.active()
        bounds = self.local_chunk_bounds() if split else self.chunk_bounds()

        def run(bound):
            out = fn(*self.chunk(*bound))
            report_rows(bound[1] - bound[0])  # the progress bar on screen, if any, counts them
            return out

        self.rows_read += len(self)
        if reduce is not None:
            return reduce(parallel_map(run, bounds, self.workers))
        return parallel_sum(run, bounds, self.workers, all_reduce=split)

    def iter_chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for bound in self.chunk_bounds():
            yield self.chunk(*bound)


class RowsWithout(Rows):
    """Every row of ``(X, y)`` except ``left_out`` (sorted, unique ids), read where they lie.

    A :class:`Rows` over a subset gathers it into a copy on first use (on Fashion-MNIST, 0.1 s for 54,000
    retained rows, as much as two passes); this set serves the chunks of the whole of X instead, and tells
    its reader which rows of each chunk to leave out (:meth:`left_out_in`). Every sweep then reads all n
    rows: it pays when few are left out. Only :class:`CachedCurvature` knows to leave them out, so the
    plain sweeps (:meth:`map_reduce`, :meth:`iter_chunks`, :meth:`tensors`) refuse. ``len`` is the number
    of rows kept: what a mean divides by, and what a sweep counts in ``rows_read`` (one pass over them).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, left_out: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 workers: int = 1):
        super().__init__(X, y, None, chunk_rows=chunk_rows, workers=workers)
        left_out = np.asarray(left_out, dtype=np.int64)
        if len(left_out) and not (np.all(np.diff(left_out) > 0) and 0 <= left_out[0] and left_out[-1] < len(y)):
            # an unsorted id would be missed by the chunk search and its row summed as if kept
            raise ValueError("rows left out must be sorted, unique ids of the set's rows")
        self.left_out = torch.from_numpy(left_out)

    def __len__(self) -> int:
        return self.n_served - len(self.left_out)

    def left_out_in(self, start: int, stop: int) -> torch.Tensor | None:
        first, last = torch.searchsorted(self.left_out, torch.tensor([start, stop])).tolist()
        return self.left_out[first:last] - start if last > first else None

    def _refuse(self, *args, **kwargs):
        raise TypeError("a set with rows left out is read through CachedCurvature, which leaves them out")

    map_reduce = iter_chunks = tensors = _refuse


def parallel_map(fn: Callable[[Any], T], items: Sequence, workers: int = 1) -> list[T]:
    """``[fn(item) for item in items]``, on ``workers`` threads when there is more than one item."""
    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))
    return [fn(item) for item in items]


def parallel_sum(fn: Callable[[Any], T], items: Sequence, workers: int = 1, all_reduce: bool = True) -> T:
    """``sum_j fn(items[j])`` added in item order (so the bits do not depend on ``workers``), then
    all-reduced across processes when ``all_reduce`` and a process group is running.

    Tensors and tuples of tensors are summed element-wise.
    """
    parts = parallel_map(fn, items, workers)
    if not parts:
        raise ValueError("no rows to sum over")
    total = sum_in_order(parts)
    return distributed.all_reduce_sum(total) if all_reduce else total


def sum_in_order(parts):
    """``parts[0] + parts[1] + ...`` left to right (tuples element-wise): bitwise reproducible."""
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(sum_in_order([p[i] for p in parts]) for i in range(len(first)))
    total = first.clone() if isinstance(first, torch.Tensor) else first
    for part in parts[1:]:
        total = total + part
    return total


def squares_in_float32(X: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """X's squared features written into ``out`` (float32, X's shape) and returned. Cast, then square:
    one mixed-dtype product (float64 in, float32 out) took four times as long on Fashion-MNIST's rows."""
    return out.copy_(X).square_()


def max_squared_norm(X: torch.Tensor, left_out: torch.Tensor | None = None) -> float:
    """``max_i ||x_i||^2`` over the rows of a chunk but those at positions ``left_out`` (0 for none). A norm
    reduction: squaring X first would allocate a chunk-sized temporary, 15 times slower on Fashion-MNIST chunks."""
    if not len(X):
        return 0.0
    norms = torch.linalg.vector_norm(X, dim=1)
    if left_out is not None:
        norms[left_out] = 0.0
    return float(norms.max()) ** 2


def retained_ids(n_train: int, forget_ids: np.ndarray) -> np.ndarray:
    """The sorted ids of ``0..n_train-1`` that are not in ``forget_ids``."""
    keep = np.ones(n_train, dtype=bool)
    keep[np.asarray(forget_ids, dtype=np.int64)] = False
    return np.flatnonzero(keep)
