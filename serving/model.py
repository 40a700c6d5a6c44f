"""The served model: loading (local path or gs://), warm-up and batched top-k prediction.

The serialized-model contract (README): a TorchScript module with `forward(item_seq: int64[B, L],
item_seq_len: int64[B], k: int) -> int64[B, k]` (top-k item ids, best first; `item_seq` right-padded) and the
attributes `catalog_size` and `max_session_length`. `Predictor.predict` pads one batch's sessions to the batch's
longest length, runs the model once with the batch's largest `k` and slices each request's answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from etude.commands import DEFAULT_K
from etude.errors import UsageError
from etude.server_defaults import WARMUP_PASSES

log = logging.getLogger(__name__)

WARMUP_BUDGET_S = 20.0  # beyond this, larger batch sizes are not warmed up


@dataclass(frozen=True, slots=True)
class Query:
    """One validated request: item ids (oldest first, already cut to the model's maximum length) and k."""

    session: list[int]
    k: int


def load_model(uri: str, device: str, *, allow_native_code: bool = False) -> Any:
    """Load and check a serialized model from a local path or gs:// URI; a UsageError names what is wrong."""
    from etude.models.export import load_model as load_exported  # the one loader: it also checks the contract

    return load_exported(uri, device, allow_native_code=allow_native_code)


class Predictor:
    """Runs batches of queries through one loaded model. Not thread-safe: call from the inference thread."""

    def __init__(self, module: Any, device: str = "cpu") -> None:
        import torch

        try:
            self.catalog_size = int(module.catalog_size)
            self.max_session_length = int(module.max_session_length)
        except (AttributeError, TypeError, ValueError) as err:
            raise UsageError(f"model lacks integer attributes catalog_size and max_session_length: {err}") from err
        if self.catalog_size < 1 or self.max_session_length < 1:
            raise UsageError(
                f"model has catalog_size={self.catalog_size}, max_session_length={self.max_session_length}; "
                "both must be >= 1"
            )
        self._torch = torch
        self._module = module
        self.device = torch.device(device)
        self._pad = [0] * self.max_session_length

    def predict(self, queries: Sequence[Query]) -> list[list[int]]:
        """Top-k item ids for each query, in order. Raises if the model's output has the wrong shape."""
        torch = self._torch
        n = len(queries)
        length = max(len(q.session) for q in queries)
        k_max = max(q.k for q in queries)
        flat: list[int] = []
        lengths: list[int] = []
        pad = self._pad
        for q in queries:
            s = q.session
            flat += s
            flat += pad[: length - len(s)]
            lengths.append(len(s))
        item_seq = torch.tensor(flat, dtype=torch.int64).view(n, length)  # [B, L], right-padded
        item_seq_len = torch.tensor(lengths, dtype=torch.int64)  # [B]
        if self.device.type != "cpu":
            item_seq = item_seq.to(self.device, non_blocking=True)
            item_seq_len = item_seq_len.to(self.device, non_blocking=True)
        with torch.inference_mode():
            top = self._module(item_seq, item_seq_len, k_max)  # [B, k_max]
        if tuple(top.shape) != (n, k_max):
            raise RuntimeError(f"model returned shape {tuple(top.shape)}, expected ({n}, {k_max})")
        rows: list[list[int]] = top.cpu().tolist()
        return [row if q.k == k_max else row[: q.k] for row, q in zip(rows, queries, strict=True)]

    def warmup_shapes(self, max_batch_size: int) -> list[tuple[int, int]]:
        """(batch size, session length) pairs worth warming: powers of 4 up to the maximum, short and long."""
        sizes = sorted({min(4**i, max_batch_size) for i in range(8)} | {max_batch_size})
        lengths = sorted({1, min(5, self.max_session_length), self.max_session_length})
        return [(b, n) for b in sizes for n in lengths]

    def warm_up(self, max_batch_size: int, passes: int = WARMUP_PASSES, budget_s: float = WARMUP_BUDGET_S) -> float:
        """Run `passes` forward passes per warm-up shape, smallest batches first; returns the seconds it took.

        Larger batch sizes are skipped once `budget_s` is spent (a big model's largest batches take seconds each;
        they are rare, and the smaller shapes already exercised every code path).
        """
        t0 = time.perf_counter_ns()
        k = min(DEFAULT_K, self.catalog_size)
        for batch_size, length in self.warmup_shapes(max_batch_size):
            elapsed_s = (time.perf_counter_ns() - t0) / 1e9
            if elapsed_s > budget_s:
                log.info("warm-up budget of %.0f s spent; not warming batch size %d and up", budget_s, batch_size)
                break
            queries = [Query([i % self.catalog_size for i in range(length)], k) for _ in range(batch_size)]
            for _ in range(passes):
                self.predict(queries)
        return (time.perf_counter_ns() - t0) / 1e9
