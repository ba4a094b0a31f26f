"""Mostly-zero observation rows (Pong frame differences) in compressed sparse row form.

A Pong frame difference has a few dozen nonzeros out of 6400, all in {-1, 1}. Stored as CSR, a
10,000-step episode takes a few MB instead of 64 MB (int8) or 512 MB (float64), and the first
layer ``X @ W1`` and its gradient ``X.T @ dh`` touch only the rows of ``W1`` that a nonzero
selects. Plain NumPy arrays inside, so it crosses every pgrl boundary like any other array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Integer observations with at most this fraction of nonzeros go through the sparse first layer,
# in both backends.
SPARSE_DENSITY = 0.1


def is_mostly_zero(x: np.ndarray) -> bool:
    """Integer rows that are worth treating as sparse (Pong's frame differences)."""
    return x.dtype.kind in "iu" and np.count_nonzero(x) <= SPARSE_DENSITY * x.size


def random_frame_differences(
    rng: np.random.Generator, n: int, width: int = 6400, nonzeros: int = 25
) -> np.ndarray:
    """(n, width) int8 rows like Pong's frame differences: ``nonzeros`` entries of +-1 per row
    at random columns, zeros elsewhere (synthetic data for checks and benchmarks)."""
    x = np.zeros((n, width), np.int8)
    for t in range(n):
        x[t, rng.choice(width, nonzeros, replace=False)] = rng.choice(
            np.array([-1, 1], np.int8), nonzeros
        )
    return x


@dataclass(frozen=True)
class SparseRows:
    """An (N, n_cols) matrix as CSR: row t holds ``values[indptr[t]:indptr[t+1]]`` at columns
    ``indices[indptr[t]:indptr[t+1]]``.

    Attributes:
        indptr: (N + 1,) int64 row offsets, nondecreasing, from 0 to nnz.
        indices: (nnz,) int32 column indices, each in [0, n_cols).
        values: (nnz,) nonzero values (int8 for frame differences).
        n_cols: width of a dense row.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_cols: int

    def __post_init__(self):
        p, i, v = self.indptr, self.indices, self.values
        if p.ndim != 1 or p.size < 1 or p[0] != 0 or p[-1] != i.size or np.any(np.diff(p) < 0):
            raise ValueError("SparseRows indptr must rise from 0 to the number of nonzeros")
        if i.shape != v.shape or i.ndim != 1:
            raise ValueError(
                f"SparseRows indices {i.shape} and values {v.shape} must be 1-D, equal"
            )
        if i.size and (i.min() < 0 or i.max() >= self.n_cols):
            raise ValueError(f"SparseRows column indices must lie in [0, {self.n_cols})")

    @classmethod
    def from_dense(cls, x: np.ndarray) -> SparseRows:
        """(N, n_cols) dense array -> SparseRows with its nonzeros."""
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"SparseRows.from_dense needs a 2-D array, got shape {x.shape}")
        values = x.ravel()
        flat = np.flatnonzero(values != 0)  # on a bool mask: several times faster than on int8
        rows, cols = np.divmod(flat, x.shape[1])
        indptr = np.searchsorted(rows, np.arange(x.shape[0] + 1))  # rows are ascending
        return cls._trusted(indptr, cols.astype(np.int32), values[flat], x.shape[1])

    @classmethod
    def _trusted(cls, indptr, indices, values, n_cols) -> SparseRows:
        """Construct without the checks of __post_init__ (for arrays pgrl built itself)."""
        obj = object.__new__(cls)
        for name, value in zip(
            ("indptr", "indices", "values", "n_cols"),
            (indptr, indices, values, n_cols),
            strict=True,
        ):
            object.__setattr__(obj, name, value)
        return obj

    @classmethod
    def concatenate(cls, parts: list[SparseRows]) -> SparseRows:
        """Stack row blocks with the same width."""
        if not parts:
            raise ValueError("SparseRows.concatenate needs at least one part")
        n_cols = parts[0].n_cols
        if any(p.n_cols != n_cols for p in parts):
            raise ValueError("SparseRows.concatenate: parts have different widths")
        offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        indptr = np.concatenate(
            [[0]] + [p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)]
        )
        return cls._trusted(
            indptr.astype(np.int64),
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            n_cols,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.indptr.size - 1, self.n_cols)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes

    def __len__(self) -> int:
        return self.indptr.size - 1

    def __getitem__(self, rows: slice) -> SparseRows:
        """Contiguous row block ``X[start:stop]`` (a view of the same arrays where possible)."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("SparseRows supports only contiguous row slices, e.g. X[10:20]")
        start, stop, _ = rows.indices(len(self))
        stop = max(start, stop)
        lo, hi = self.indptr[start], self.indptr[stop]
        if start == 0 and stop == len(self):
            return self
        return SparseRows._trusted(
            self.indptr[start : stop + 1] - lo, self.indices[lo:hi], self.values[lo:hi], self.n_cols
        )

    def take(self, rows: np.ndarray) -> SparseRows:
        """The rows ``X[rows]`` (any integer indices, in their order) as new SparseRows."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # the k-th stored nonzero of the result is nonzero (k - indptr[row]) of its source row
        gather = np.arange(indptr[-1]) + np.repeat(starts - indptr[:-1], lengths)
        return SparseRows._trusted(indptr, self.indices[gather], self.values[gather], self.n_cols)

    def row_ids(self) -> np.ndarray:
        """(nnz,) row index of each stored nonzero."""
        return np.repeat(np.arange(len(self)), np.diff(self.indptr))

    def toarray(self, dtype=None) -> np.ndarray:
        """Dense (N, n_cols) copy."""
        out = np.zeros(self.shape, dtype=dtype or self.values.dtype)
        out[self.row_ids(), self.indices] = self.values
        return out

    def matmul(self, w: np.ndarray) -> np.ndarray:
        """``X @ w`` for w of shape (n_cols, H), touching only the rows of w that are selected."""
        # One small product per row, values (k,) @ w[cols] (k, H): with ~25 nonzeros a row this
        # beats a vectorized gather of all (nnz, H) terms ~3x, and needs no large temporary.
        out = np.empty((len(self), w.shape[1]), dtype=w.dtype)
        bounds = self.indptr.tolist()
        indices, values = self.indices, self.values.astype(w.dtype)
        for i in range(len(self)):
            lo, hi = bounds[i], bounds[i + 1]
            out[i] = values[lo:hi] @ w[indices[lo:hi]]
        return out

    def rmatmul(self, dh: np.ndarray) -> np.ndarray:
        """``X.T @ dh`` for dh of shape (N, H): the first-layer weight gradient, (n_cols, H)."""
        out = np.zeros((self.n_cols, dh.shape[1]), dtype=dh.dtype)
        bounds = self.indptr.tolist()
        indices, values = self.indices, self.values.astype(dh.dtype)
        for i in range(len(self)):
            lo, hi = bounds[i], bounds[i + 1]
            # a row holds each column at most once, so the fancy-indexed += adds no duplicates
            out[indices[lo:hi]] += values[lo:hi, None] * dh[i]
        return out


def take_rows(x, rows: np.ndarray):
    """Rows ``rows`` (integer indices) of a dense array or of :class:`SparseRows`, as a copy."""
    return x.take(rows) if isinstance(x, SparseRows) else x[rows]
