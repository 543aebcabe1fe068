"""The transformers backend: every call into transformers' cache API lives here.

**Shared prefix.** Every prompt of a batch starts with the same ``prefix_len`` tokens. They
run once (causal, positions ``0..L-1``); their KV cache is kept for the next batch with the
same prefix and broadcast to each batch, whose rows run after it with the padding masked and
positions continuing the prefix. Reading the next token, rows are left-aligned with the pads
at the end, where causal attention keeps every real token from seeing them; generating, rows
are right-aligned so that each step's tokens fill one new column::

    read:      [ shared prefix (cached) | row tokens | pad … pad ]
    generate:  [ shared prefix (cached) | pad … pad | row tokens ]

That is exact in arithmetic (the same tokens at the same positions under the same causal
mask) and differs from one uncached, unpadded pass only by float rounding (~1e-6 in fp32).

**Generation** is a plain greedy loop (or temperature sampling with a seeded generator)
rather than ``model.generate``: a model's ``generation_config`` cannot switch sampling on
behind the harness's back, and the tokens each row generated are counted exactly. Its KV
cache has room reserved for the answer (:mod:`reserved_cache`), so a step writes one column
instead of copying the cache, and the vocabulary projection runs on one position per row.
A call's rows decode together unless their cache would not fit in memory (:meth:`decode_rows`).

**Prefix sharing** (lft's orders, FIRST's windows; ``prefix_sharing``, on by default): rows
of one call that agree beyond the shared prefix run on a radix tree
(:mod:`harness.backends.prefix_tree`), each distinct prefix once, children on their parents'
gathered KV caches under an explicit mask; taken only where it computes at most half the
tokens (``SHARING_GAIN``). Never for InvariRank, whose invariance is measured, not built
in. A level's nodes run in chunks whose caches, with those held for their children, fit the
share of free memory decoding takes (:meth:`_tree_values`).

**Masked forward** (InvariRank, lft): one pass over rows of equal length on a computed
prefix with an explicit additive 4-D float mask (0 allowed, ``finfo(dtype).min`` blocked — a
boolean mask would be added as 0/1 by the eager path) and explicit positions.

**Version-specific calls.** Written for the transformers 5 API (declared range in
``pyproject.toml``): the cache is passed as ``cache=`` and read from ``output.cache`` (5.x
renamed ``past_key_values``, deprecated for removal), built with
``DynamicCache(ddp_cache_data=…, config=…)`` and read through ``cache.layers``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from harness.backends.base import (
    Backend,
    Capability,
    Generation,
    GenerationRequest,
    MaskedRequest,
    NextTokenScores,
    QueryAttention,
    TokenBatch,
    eos_token_ids,
    length_groups,
)
from harness.backends.params import ModelParams, TransformersParams
from harness.context import RunContext
from harness.errors import HarnessError, MissingExtraError
from harness.models.loading import LoadedModel, load_model

if TYPE_CHECKING:
    import torch

    from harness.backends.prefix_tree import PrefixTree

LOGIT_CHUNK = 256  # rows of the vocabulary projection computed at once (~50 MB for 49k vocab)
DECODE_MEMORY_SHARE = 0.25  # of free memory the KV caches of a decoding pass or tree walk may take
TREE_TOKENS = 8192  # rows x (cached + new) positions of one prefix-tree pass (bounds activations)
SHARING_GAIN = 2.0  # the prefix tree runs only when it computes this many times fewer tokens
DEFAULT_DTYPE = "float32"  # what the invariance checks need (bf16 moves logits by ~0.4)


class TransformersBackend(Backend):
    """A loaded causal LM (CPU or GPU) with a one-entry prefix cache."""

    name = "transformers"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    engine_params: ClassVar[type] = TransformersParams

    def __init__(
        self, loaded: LoadedModel, adapter_path: str | None = None, prefix_sharing: bool = True
    ) -> None:
        self.adapter: dict[str, str] | None = None
        if adapter_path is not None:
            merged, self.adapter = merge_lora_adapter(loaded.model, adapter_path)
            loaded = dataclasses.replace(loaded, model=merged)
        self.loaded = loaded
        self._decoder = loaded.model.get_decoder()
        self._head = loaded.model.get_output_embeddings()
        pad = loaded.tokenizer.pad_token_id
        self._pad = pad if pad is not None else (loaded.tokenizer.eos_token_id or 0)
        self._prefix_key: tuple[int, ...] | None = None
        self._prefix_cache: Any = None
        self.prefix_passes = 0  # how many times a shared prefix was computed
        self.forward_tokens = 0  # token positions run through the model (padding excluded)
        self.prefix_sharing = prefix_sharing

    @classmethod
    def open(
        cls, model: ModelParams, engine: TransformersParams, context: RunContext, purpose: str
    ) -> TransformersBackend:
        loaded = load_model(
            model.model,
            device=context.device,
            dtype=model.dtype or DEFAULT_DTYPE,
            attn_implementation=model.attn_implementation,
            revision=model.revision,
            purpose=purpose,
        )
        return cls(loaded, engine.adapter_path, engine.prefix_sharing)

    def identity(self) -> dict[str, Any]:
        identity = self.loaded.identity.to_dict()
        if self.adapter is not None:
            identity["lora_adapter"] = self.adapter
        return identity

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def max_positions(self) -> int | None:
        return self.loaded.max_positions

    def stop_token_ids(self) -> frozenset[int]:
        return eos_token_ids(self.tokenizer, self.loaded.model.generation_config)

    # -- next-token log-probabilities and generation on a shared prefix --------------------

    def next_token_logprobs(self, batch: TokenBatch, token_ids: Sequence[int]) -> NextTokenScores:
        import torch

        if self.prefix_sharing and batch.prefix_len > 0 and len(batch.rows) > 1:
            from harness.backends.prefix_tree import build_prefix_tree

            tree = build_prefix_tree([row[batch.prefix_len :] for row in batch.rows])
            unshared = sum(len(row) for row in batch.rows) - batch.prefix_len * len(batch.rows)
            if tree.tokens * SHARING_GAIN <= unshared:
                return self._tree_next_token(batch, token_ids, tree)
        parts = _unshared_rows(batch)
        if parts is not None:
            return _joined([self.next_token_logprobs(part, token_ids) for part in parts])
        groups = length_groups([len(row) - batch.prefix_len for row in batch.rows])
        if len(groups) > 1:  # rows of mixed lengths: one pass per group of similar lengths
            done = [
                self.next_token_logprobs(TokenBatch(tuple(batch.rows[i] for i in g), n), token_ids)
                for g, n in ((g.tolist(), batch.prefix_len) for g in groups)
            ]
            back = np.argsort(np.concatenate(groups), kind="stable")
            return _joined(done, back)
        passes = self.prefix_passes
        logits = self._read_last(batch)  # [P, V] fp32: one position per row
        ids = torch.tensor(list(token_ids), device=logits.device)
        logprobs = logits.log_softmax(dim=-1)[:, ids]
        mass = torch.softmax(logits, dim=-1)[:, ids].sum(dim=-1)
        top = torch.isin(logits.argmax(dim=-1), ids)
        p = len(batch.rows)
        return NextTokenScores(
            logprobs=logprobs.cpu().numpy(),
            mass=tuple(float(m) for m in mass.tolist()),
            top_is_chosen=tuple(bool(t) for t in top.tolist()),
            generated_tokens=(1,) * p,
            missing=(0,) * p,
            prefix_computed=self.prefix_passes > passes,
        )

    def _tree_next_token(
        self, batch: TokenBatch, token_ids: Sequence[int], tree: PrefixTree
    ) -> NextTokenScores:
        """:meth:`next_token_logprobs` with the rows after the shared prefix on a prefix tree:
        windows that agree on their first candidates (a pinned head, exhaustive orders) run
        those tokens once; duplicate windows are read once."""
        passes = self.prefix_passes
        start = batch.prefix_len
        rows = [np.asarray(row[start:], dtype=np.int64) for row in batch.rows]
        columns = [np.array([len(row) - 1]) for row in rows]
        cache = self._prefix_cache_of(batch.prefix)
        values, index = self._tree_values(cache, start, tree, rows, columns, None, token_ids)
        picked = values[np.concatenate(index)]
        k, p = len(token_ids), len(rows)
        return NextTokenScores(
            logprobs=picked[:, :k].astype(np.float32),
            mass=tuple(float(m) for m in picked[:, k].tolist()),
            top_is_chosen=tuple(bool(t) for t in picked[:, k + 1].tolist()),
            generated_tokens=(1,) * p,
            missing=(0,) * p,
            prefix_computed=self.prefix_passes > passes,
        )

    def generate(self, batch: TokenBatch, request: GenerationRequest) -> Generation:
        """Greedy (``temperature`` 0) or sampled continuation of every row, until each row has
        produced a stop token or ``max_new_tokens`` tokens (``ignore_stop``: always the cap)."""
        import torch

        parts = _unshared_rows(batch)
        rows = self.decode_rows(batch, request.max_new_tokens)
        if parts is None and rows < len(batch.rows):  # the KV cache would not fit: split
            parts = [
                TokenBatch(batch.rows[start : start + rows], batch.prefix_len)
                for start in range(0, len(batch.rows), rows)
            ]
        if parts is not None:
            passes = self.prefix_passes
            done = [self.generate(part, request) for part in parts]
            return Generation(
                tuple(t for g in done for t in g.tokens),
                tuple(t for g in done for t in g.texts),
                tuple(s for g in done for s in g.stopped),
                sum(g.decode_steps for g in done),
                self.prefix_passes > passes,
            )
        passes = self.prefix_passes
        logits, (cache, mask, positions) = self._prefill(batch, request.max_new_tokens)
        p = len(batch.rows)
        device = logits.device
        generator = None
        if request.temperature > 0.0:
            generator = torch.Generator(device=device)
            generator.manual_seed(request.seed or 0)
        stop = torch.tensor(sorted(request.stop_ids), dtype=torch.long, device=device)
        finished = torch.zeros(p, dtype=torch.bool, device=device)
        stopped = torch.zeros(p, dtype=torch.bool, device=device)
        lengths = torch.zeros(p, dtype=torch.long, device=device)
        steps: list[torch.Tensor] = []
        decode_steps = 0
        with torch.inference_mode():
            for step in range(request.max_new_tokens):
                chosen = _choose(logits, request.temperature, generator)
                chosen = torch.where(finished, torch.full_like(chosen, self._pad), chosen)
                steps.append(chosen)
                lengths += (~finished).long()
                if not request.ignore_stop:
                    hit = torch.isin(chosen, stop) & ~finished
                    stopped |= hit
                    finished |= hit
                if bool(finished.all()) or step + 1 == request.max_new_tokens:
                    break
                mask = torch.cat([mask, torch.ones(p, 1, dtype=mask.dtype, device=device)], dim=1)
                positions = positions[:, -1:] + 1
                self.forward_tokens += p
                output = self._decoder(
                    input_ids=chosen[:, None],
                    attention_mask=mask,
                    position_ids=positions,
                    cache=cache,
                    use_cache=True,
                )
                cache = output.cache
                logits = self._head(output.last_hidden_state[:, -1]).float()
                decode_steps += 1
        table = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(p)]
        tokens = tuple(tuple(row[:n]) for row, n in zip(table, lengths.tolist(), strict=True))
        ended = tuple(bool(s) for s in stopped.tolist())
        texts = tuple(
            self.tokenizer.decode(list(t[:-1] if s else t), skip_special_tokens=True)
            for t, s in zip(tokens, ended, strict=True)
        )
        return Generation(tokens, texts, ended, decode_steps, self.prefix_passes > passes)

    def decode_rows(self, batch: TokenBatch, new_tokens: int) -> int:
        """How many rows of ``batch`` one decoding pass takes: all of them unless their KV
        cache (prompt + ``new_tokens`` positions per row) would take more than
        ``DECODE_MEMORY_SHARE`` of the memory free on the model's device now."""
        per_row = max(len(r) for r in batch.rows) + new_tokens
        return max(1, self._cache_positions() // per_row)

    def _cache_positions(self) -> int:
        """Row positions of KV cache that fit in ``DECODE_MEMORY_SHARE`` of the memory free on
        the model's device now."""
        budget = int(DECODE_MEMORY_SHARE * free_memory(self.loaded.device))
        return budget // kv_bytes_per_token(self.loaded.model)

    def _read_last(self, batch: TokenBatch) -> torch.Tensor:
        """fp32 logits after each row's last token, rows left-aligned (pads at the end, where
        no real token can see them, so each row computes as it would alone)."""
        import torch

        output, _, _, ends = self._run_rows(batch, right_aligned=False)
        rows = torch.arange(len(batch.rows), device=ends.device)
        with torch.inference_mode():
            return self._head(output.last_hidden_state[rows, ends]).float()

    def _prefill(
        self, batch: TokenBatch, reserve: int
    ) -> tuple[torch.Tensor, tuple[Any, Any, Any]]:
        """Run the rows right-aligned, so that the next token of every row goes in one new
        column; returns last-position fp32 logits and the state a decoding loop continues
        from (cache with room for ``reserve`` more tokens, 2-D mask, positions)."""
        import torch

        output, mask, positions, _ = self._run_rows(batch, right_aligned=True, reserve=reserve)
        with torch.inference_mode():
            logits = self._head(output.last_hidden_state[:, -1]).float()
        return logits, (output.cache, mask, positions)

    def _run_rows(
        self, batch: TokenBatch, right_aligned: bool, reserve: int = 0
    ) -> tuple[Any, Any, Any, Any]:
        """One forward pass over the rows after the (cached) shared prefix, padded to one
        width with the padding masked and positions continuing the prefix; returns the
        output, the 2-D mask, the positions and each row's last column. ``reserve``: tokens
        the caller will still add, for which the returned cache keeps room (decoding then
        writes into it instead of copying the cache at every step)."""
        import torch

        from harness.backends.reserved_cache import reserved_cache

        device = self.loaded.device
        length = batch.prefix_len
        rest = [row[length:] for row in batch.rows]
        p, width = len(rest), max(len(r) for r in rest)
        input_ids = torch.full((p, width), self._pad, dtype=torch.long, device=device)
        mask = torch.zeros(p, length + width, dtype=torch.long, device=device)
        mask[:, :length] = 1
        if right_aligned:
            positions = torch.full((p, width), length, dtype=torch.long, device=device)
        else:
            positions = (length + torch.arange(width, device=device)).expand(p, width)
        for i, row in enumerate(rest):
            start = width - len(row) if right_aligned else 0
            input_ids[i, start : start + len(row)] = torch.tensor(row, device=device)
            mask[i, length + start : length + start + len(row)] = 1
            if right_aligned:
                positions[i, start:] = torch.arange(length, length + len(row))
        ends = torch.tensor([width - 1 if right_aligned else len(r) - 1 for r in rest])
        self.forward_tokens += sum(len(r) for r in rest)
        with torch.inference_mode():
            if length:
                cache = self._shared_prefix(batch, width + reserve if reserve else 0)
            elif reserve:
                cache = reserved_cache(self.loaded.model.config, width + reserve)
            else:
                cache = None
            output = self._decoder(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            )
        return output, mask, positions, ends.to(device)

    def _shared_prefix(self, batch: TokenBatch, room: int = 0) -> Any:
        """The prefix's KV cache broadcast to the batch (with ``room`` free positions per row
        when above 0); the prefix runs once per new key."""
        return self._broadcast(self._prefix_cache_of(batch.prefix), len(batch.rows), room)

    def _prefix_cache_of(self, key: tuple[int, ...]) -> Any:
        """The batch-1 KV cache of prefix ``key``, computed once per new key."""
        if key != self._prefix_key:
            self._prefix_cache = self.prefix(key)
            self._prefix_key = key
            self.prefix_passes += 1
        return self._prefix_cache

    # -- masked forward ----------------------------------------------------------------------

    def prefix(self, token_ids: Sequence[int]) -> Any:
        import torch

        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.loaded.device)
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        self.forward_tokens += ids.shape[1]
        with torch.inference_mode():
            return self._decoder(input_ids=ids, position_ids=positions, use_cache=True).cache

    def masked_logprobs(self, prefix: Any, request: MaskedRequest) -> np.ndarray:
        import torch

        device = self.loaded.device
        dtype = self._head.weight.dtype
        # Copies: the arrays may be read-only views (broadcasts), which torch warns about.
        input_ids = torch.tensor(request.tokens, device=device)
        positions = torch.tensor(request.positions, device=device)
        allowed = torch.tensor(request.allowed, device=device)
        p = input_ids.shape[0]
        self.forward_tokens += int(input_ids.numel())
        with torch.inference_mode():
            hidden = self._decoder(
                input_ids=input_ids,
                attention_mask=additive_mask(allowed, dtype),
                position_ids=positions,
                cache=self._broadcast(prefix, p),
                use_cache=True,
            ).last_hidden_state
            # The token at `column` is predicted by the hidden state one step before it.
            rows = torch.from_numpy(request.target_rows).to(device)
            columns = torch.from_numpy(request.target_columns).to(device)
            picked = hidden[rows, columns - 1]
            if request.target_tokens is None:
                targets = input_ids[rows, columns]
            else:
                targets = torch.from_numpy(request.target_tokens).to(device)
            return token_logprobs(picked, targets, self._head).double().cpu().numpy()

    def _broadcast(self, cache: Any, batch: int, room: int = 0) -> Any:
        """A fresh ``DynamicCache`` holding a batch-1 cache's keys/values ``batch`` times
        (``room`` > 0: with that many free positions, see :mod:`reserved_cache`).

        Built anew for every forward pass because the model appends to the cache it is given;
        the prefix cache itself is never modified, so it can serve any number of batches.
        """
        from transformers import DynamicCache

        from harness.backends.reserved_cache import reserved_cache

        layers = [(layer.keys, layer.values) for layer in cache.layers]
        expanded = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in layers]
        config = self.loaded.model.config
        if room:
            return reserved_cache(config, room, expanded)
        return DynamicCache(ddp_cache_data=expanded, config=config)

    # -- prefix sharing ----------------------------------------------------------------------

    def causal_logprobs(
        self,
        prefix: Any,
        start: int,
        tokens: np.ndarray,
        target_rows: np.ndarray,
        target_columns: np.ndarray,
        rows_per_pass: int | None = None,
    ) -> np.ndarray:
        """log p(token at each target) of rows ``tokens`` [P, T] run causally on the batch-1
        ``prefix`` cache, at positions following it. With ``prefix_sharing``, each distinct
        prefix of the rows runs once (:meth:`_tree_values`); else one masked pass."""
        from harness.backends.prefix_tree import build_prefix_tree

        p = tokens.shape[0]
        rows = [tokens[r] for r in range(p)]
        tree = None
        if self.prefix_sharing and p > 1 and (target_columns > 0).all():
            tree = build_prefix_tree(rows)
        if tree is None or tree.tokens * SHARING_GAIN > tokens.size:
            return super().causal_logprobs(
                prefix, start, tokens, target_rows, target_columns, rows_per_pass
            )
        order = np.lexsort((target_columns, target_rows))
        split = np.cumsum(np.bincount(target_rows, minlength=p))[:-1]
        columns = np.split(target_columns[order] - 1, split)
        wanted = np.split(tokens[target_rows[order], target_columns[order]], split)
        values, index = self._tree_values(prefix, start, tree, rows, columns, wanted, None)
        out = np.empty(len(target_rows))
        out[order] = np.concatenate([values[i, 0] for i in index])
        return out

    def _tree_values(
        self,
        prefix: Any,
        start: int,
        tree: PrefixTree,
        rows: Sequence[np.ndarray],
        columns: Sequence[np.ndarray],
        targets: Sequence[np.ndarray] | None,
        token_ids: Sequence[int] | None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Per distinct read, what the caller asked of the hidden state at (row, column), each
        distinct prefix computed once; and per row the index of each of its reads.

        ``targets``: per row, the token each read predicts (its log-prob is the value); or,
        with ``token_ids``, the values are the log-probs of those ids, the
        probability mass on them and whether the top token is one of them (FIRST's read).

        The tree is walked depth-first a level at a time: the children of a batch of nodes
        run in one pass on their parents' caches, gathered per row (holes where a parent was
        shorter than its batch's longest are masked), at the positions their columns have.

        Memory: a chunk of n nodes with ``past`` cached columns (their parents' caches
        gathered: n x ``past`` positions, none at the roots, which broadcast the prefix) grows
        n x (``past`` + edge) positions, held while its children run. A chunk takes what fits
        in the share of free memory measured once per walk (:meth:`_cache_positions`) after
        the caches its ancestors hold and the room one node per deeper level needs; where even
        one node per level does not fit, the walk stops before any pass."""
        import torch
        from transformers import DynamicCache

        from harness.backends.prefix_tree import level_edges, tree_reads

        read_node, read_col, target, index = tree_reads(tree, columns, targets)
        first = np.searchsorted(read_node, np.arange(len(tree.start)))
        last = np.searchsorted(read_node, np.arange(len(tree.start)), side="right")
        width = 1 if token_ids is None else len(token_ids) + 2
        values = np.zeros((len(read_node), width))
        device, dtype = self.loaded.device, self._head.weight.dtype
        config = self.loaded.model.config
        ids = None if token_ids is None else torch.tensor(list(token_ids), device=device)
        lengths = tree.end - tree.start
        # reserve[d]: positions a walk of one node per level from depth d down holds at most
        # (bounds: the longest edge of each level, past columns widened by each level above).
        edges = level_edges(tree)
        pasts = start + np.concatenate([[0], np.cumsum(edges)[:-1]])
        reserve = np.zeros(len(edges) + 1, dtype=np.int64)
        for d in range(len(edges) - 1, -1, -1):
            copied = pasts[d] if d else 0
            grown = pasts[d] + edges[d]
            reserve[d] = max(copied + grown, grown + reserve[d + 1])
        budget = self._cache_positions()
        if reserve[0] > budget:
            kv = kv_bytes_per_token(self.loaded.model)
            raise HarnessError(
                f"prefix sharing: one row of this call's prefix tree ({len(edges)} levels, "
                f"{int(pasts[-1] + edges[-1])} positions) needs {_size(int(reserve[0]) * kv)} "
                f"of KV cache, more than {DECODE_MEMORY_SHARE:.0%} of the memory free on "
                f"{self.loaded.device} ({_size(budget * kv)}); lower the batch size or the "
                "design's depth, or set prefix_sharing: false in the preset's params"
            )

        def project(hidden: torch.Tensor, reads: np.ndarray) -> None:
            if ids is None:
                chosen = torch.from_numpy(target[reads]).to(device)
                values[reads, 0] = token_logprobs(hidden, chosen, self._head).double().cpu().numpy()
                return
            logits = self._head(hidden).float()
            values[reads, :-2] = logits.log_softmax(dim=-1)[:, ids].cpu().numpy()
            values[reads, -2] = torch.softmax(logits, dim=-1)[:, ids].sum(dim=-1).cpu().numpy()
            values[reads, -1] = torch.isin(logits.argmax(dim=-1), ids).cpu().numpy()

        def descend(
            layers: list[Any],
            valid: torch.Tensor,
            nodes: list[int],
            up: list[int],
            depth: int,
            room: int,
        ) -> None:
            past = valid.shape[1]
            edge = int(lengths[nodes].max())
            copied = past if depth else 0
            fits = min(room // (copied + past + edge), (room - reserve[depth + 1]) // (past + edge))
            step = max(1, min(TREE_TOKENS // (past + edge), int(fits)))
            for at in range(0, len(nodes), step):
                chunk = np.array(nodes[at : at + step], dtype=np.int64)
                parents = torch.tensor(up[at : at + step], device=device)
                n, e = len(chunk), int(lengths[chunk].max())
                real = (
                    torch.arange(e, device=device)[None]
                    < torch.from_numpy(lengths[chunk]).to(device)[:, None]
                )
                input_ids = torch.full((n, e), self._pad, dtype=torch.long, device=device)
                for i, node in enumerate(chunk.tolist()):
                    s, t = int(tree.start[node]), int(tree.end[node])
                    input_ids[i, : t - s] = torch.from_numpy(
                        np.asarray(rows[tree.rep[node]][s:t])
                    ).to(device)
                starts = torch.from_numpy(tree.start[chunk]).to(device)
                positions = start + starts[:, None] + torch.arange(e, device=device)[None]
                seen = valid[parents] if valid.shape[0] > 1 else valid.expand(n, -1)
                causal = torch.tril(torch.ones(e, e, dtype=torch.bool, device=device))
                allowed = torch.cat(
                    [seen[:, None, :] & real[:, :, None], causal[None] & real[:, None, :]], dim=2
                ) | torch.cat(
                    [
                        torch.zeros(1, e, past, dtype=torch.bool, device=device),
                        torch.eye(e, dtype=torch.bool, device=device)[None],
                    ],
                    dim=2,
                )
                if valid.shape[0] > 1:
                    cache_data = [(k[parents], v[parents]) for k, v in layers]
                else:
                    cache_data = [
                        (k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in layers
                    ]
                with torch.inference_mode():
                    output = self._decoder(
                        input_ids=input_ids,
                        attention_mask=additive_mask(allowed, dtype),
                        position_ids=positions,
                        cache=DynamicCache(ddp_cache_data=cache_data, config=config),
                        use_cache=True,
                    )
                    self.forward_tokens += int(lengths[chunk].sum())
                    hidden = output.last_hidden_state
                    picks = [
                        (i, np.arange(first[node], last[node]))
                        for i, node in enumerate(chunk.tolist())
                        if last[node] > first[node]
                    ]
                    if picks:
                        reads = np.concatenate([r for _, r in picks])
                        row_of = np.concatenate([np.full(len(r), i) for i, r in picks])
                        col_of = read_col[reads] - tree.start[chunk[row_of]]
                        project(hidden[torch.from_numpy(row_of), torch.from_numpy(col_of)], reads)
                    grown = [(layer.keys, layer.values) for layer in output.cache.layers]
                    del output, hidden, cache_data  # the children hold only the grown caches
                below = [
                    (c, i) for i, node in enumerate(chunk.tolist()) for c in tree.children[node]
                ]
                if below:
                    descend(
                        grown,
                        torch.cat([seen, real], dim=1),
                        [c for c, _ in below],
                        [i for _, i in below],
                        depth + 1,
                        room - n * (past + e),
                    )

        layers = [(layer.keys, layer.values) for layer in prefix.layers]
        valid = torch.ones(1, start, dtype=torch.bool, device=device)
        descend(layers, valid, list(tree.roots), [0] * len(tree.roots), 0, budget)
        return values, index

    # -- vocabulary and attention ------------------------------------------------------------

    def add_special_tokens(self, tokens: Sequence[str]) -> tuple[int, ...]:
        """Add ``tokens`` as special tokens (one id each) with deterministic embeddings.

        New rows are set to the mean of the existing rows instead of the random draw
        ``resize_token_embeddings`` would make, so scores do not depend on the RNG.
        Idempotent: tokens the tokenizer already has are left as they are.
        """
        import torch

        tokenizer = self.loaded.tokenizer
        model: Any = self.loaded.model  # nn.Module's __getattr__ types attributes Tensor | Module
        known = len(tokenizer)
        tokenizer.add_special_tokens(
            {"additional_special_tokens": list(tokens)}, replace_extra_special_tokens=False
        )
        # one token in, one id out (the stubs' return type also covers a list in)
        ids = [cast(int, tokenizer.convert_tokens_to_ids(token)) for token in tokens]
        for token, token_id in zip(tokens, ids, strict=True):
            if tokenizer.encode(token, add_special_tokens=False) != [token_id]:
                raise HarnessError(f"the tokenizer does not encode {token!r} as one token")
        new = [token_id for token_id in ids if token_id >= known]
        if new:
            rows = model.get_input_embeddings().num_embeddings
            if max(new) >= rows:
                with torch.random.fork_rng(devices=[]):
                    model.resize_token_embeddings(max(new) + 1, mean_resizing=False)
            weights = {model.get_input_embeddings().weight}
            output = model.get_output_embeddings()
            if output is not None:
                weights.add(output.weight)
            with torch.no_grad():
                for weight in weights:
                    weight[new] = weight[:known].mean(dim=0)
        self._head = model.get_output_embeddings()
        return tuple(ids)

    def attention_weights(self, token_ids: Sequence[int]) -> np.ndarray:
        """Attention weights [layers, heads, L, L] (fp32) of one causal pass. Needs
        ``attn_implementation: eager``: fused kernels (sdpa) never materialise them. Not a
        :class:`Capability` (no method needs it): the reference for ``bench_attention.py``."""
        import torch

        if self.loaded.identity.attn_implementation != "eager":
            raise HarnessError(
                "attention weights need attn_implementation: eager, this model runs "
                f"{self.loaded.identity.attn_implementation!r}"
            )
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.loaded.device)
        with torch.inference_mode():
            output = self._decoder(input_ids=ids, output_attentions=True)
        return torch.cat(output.attentions).float().cpu().numpy()

    @property
    def attention_shape(self) -> tuple[int, int]:
        config = self.loaded.model.config
        return int(config.num_hidden_layers), int(config.num_attention_heads)

    def query_attention(
        self, prefixes: np.ndarray, queries: Sequence[Sequence[int]], layers: Sequence[int]
    ) -> QueryAttention:
        """Query rows' attention on chosen layers, through transformers' attention-function
        interface (any ``attn_implementation``; see :mod:`harness.backends.attention_read`)."""
        from harness.backends.attention_read import check_readable, query_attention

        check_readable(self.loaded.model)
        return query_attention(
            self.loaded.model, self._decoder, prefixes, queries, layers, self._pad
        )


def kv_bytes_per_token(model: Any) -> int:
    """Bytes one position of one row takes in the model's KV cache (keys and values of every
    layer)."""
    config = model.config.get_text_config(decoder=True)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    size = next(model.parameters()).element_size()
    return 2 * int(config.num_hidden_layers) * int(kv_heads) * int(head_dim) * size


def free_memory(device: Any) -> int:
    """Bytes free on ``device`` now: CUDA's free memory, or the host's available memory
    (Linux ``MemAvailable``, which counts reclaimable page cache; else free pages)."""
    import torch

    if str(device).startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no such query here: no limit
        return 1 << 62


def _size(count: int) -> str:
    return f"{count / 2**20:,.0f} MiB" if count >= 2**20 else f"{count:,} bytes"


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[P,1,T,K] floats: 0 where allowed, ``finfo(dtype).min`` where blocked."""
    import torch

    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def token_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module
) -> torch.Tensor:
    """fp32 log p(target | hidden) over the full vocabulary, projected in chunks.

    Only the target's logit is kept; the log-sum-exp runs in place on the chunk's logits
    (max, subtract, exp, sum), sparing ``torch.logsumexp``'s extra chunk-sized temporary."""
    import torch

    parts = []
    for start in range(0, len(targets), LOGIT_CHUNK):
        logits = head(hidden[start : start + LOGIT_CHUNK]).float()
        chosen = logits.gather(1, targets[start : start + LOGIT_CHUNK, None])[:, 0]
        top = logits.amax(dim=-1, keepdim=True)
        total = logits.sub_(top).exp_().sum(dim=-1).log_()
        parts.append(chosen - top[:, 0] - total)
    return torch.cat(parts)


def merge_lora_adapter(model: Any, adapter_path: str) -> tuple[Any, dict[str, str]]:
    """Merge a PEFT LoRA adapter into ``model``'s weights; returns the model and the adapter's
    identity. Merging keeps one plain forward (no adapter hooks) at scoring time."""
    if importlib.util.find_spec("peft") is None:
        raise MissingExtraError("peft", "peft", "loading a LoRA adapter (adapter_path)")
    from peft import PeftModel

    path = Path(adapter_path).expanduser()
    weights = sorted(path.glob("adapter_model.*")) if path.is_dir() else []
    if not weights:
        raise HarnessError(f"adapter_path {adapter_path!r} is not a PEFT adapter folder")
    merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval()
    digest = hashlib.sha256(weights[0].read_bytes()).hexdigest()
    return merged, {"path": str(path), "sha256": digest}


def _joined(parts: Sequence[NextTokenScores], order: np.ndarray | None = None) -> NextTokenScores:
    """The scores of consecutive row groups as one; ``order`` puts the rows back where they
    were when the groups were taken out of order."""
    pick = order if order is not None else np.arange(sum(len(p.mass) for p in parts))

    def rows(values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(values[i] for i in pick.tolist())

    return NextTokenScores(
        logprobs=np.concatenate([p.logprobs for p in parts])[pick],
        mass=rows([m for p in parts for m in p.mass]),
        top_is_chosen=rows([t for p in parts for t in p.top_is_chosen]),
        generated_tokens=rows([g for p in parts for g in p.generated_tokens]),
        missing=rows([m for p in parts for m in p.missing]),
        prefix_computed=any(p.prefix_computed for p in parts),
    )


def _unshared_rows(batch: TokenBatch) -> list[TokenBatch] | None:
    """Single-row batches when rows of different lengths share no prefix: a padded row's pad
    queries would then see no key at all (NaN rows under sdpa). ``None`` when batching is safe.
    """
    if batch.prefix_len > 0 or len({len(r) for r in batch.rows}) <= 1:
        return None
    return [TokenBatch((row,), 0) for row in batch.rows]


def _choose(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    import torch

    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
