"""The patcher: the only owner of pristine backups (FORMATS.md §10.1–10.2, A1111_CONTRACT.md §8.4).

``Patcher.apply(active)`` makes the model hold W₀ + Σ ΔWᵢ for the given active set, each tensor rounded once to its
storage dtype (fp32, fp16, bf16, fp8), with deltas computed in float32 on the weight's device, autocast off. Only tensors
whose contributions changed since the last apply are visited: unchanged ones are left alone, dropped ones are restored,
new ones are patched, and changed ones are recomputed from their backup straight into the tensor installed before.
On CPU, when the products leave a core idle, a helper thread copies W₀ into new tensors or pristine backups ahead of the
arithmetic, then computes the streamed low-precision slots whose destination the model does not see yet; whenever the
caller would wait for it, the caller runs the last of those steps itself (``patching/staging.py``), so the two threads
share the work without a cost model. ``restore()`` puts back every original bit-exactly and frees all backups.
An exception inside ``apply`` restores the whole model and comes back as an error ``Problem`` naming the layer.

The patcher is an object the host owns (one per model); it keeps no module-level state and is safe to call from
several threads (one lock serialises apply, restore and the checks).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from lora_ext.adapters import ActiveLora
from lora_ext.errors import Problem
from lora_ext.patching import fresh_memory
from lora_ext.patching.backup import TensorBackup, choose_strategy
from lora_ext.patching.compute import (
    SlotResult,
    compute_slot,
    scratch_elements,
    stream_factors,
    stream_rows,
    streams_rows,
)
from lora_ext.patching.factors import Factors
from lora_ext.patching.memory import release_freed_memory
from lora_ext.patching.pinned import PinnedSlabs
from lora_ext.patching.plan import Contribution, Slot, build_plan
from lora_ext.patching.staging import Stager
from lora_ext.patching.upload import Uploader

STRATEGIES = ("auto", "swap", "copy")


@dataclass
class ApplyResult:
    """Outcome of ``Patcher.apply``.

    problems: warnings (skipped layers) and, when ``failed``, the error that made the patcher restore everything.
    changed: the model's weights changed (False when the same set was applied again).
    failed: an exception occurred; the model is back to its pristine weights and nothing is applied.
    visited: tensors restored or patched by this call (0 for an unchanged set).
    patched: tensors holding LoRA updates after this call.
    """

    problems: list[Problem] = field(default_factory=list)
    changed: bool = False
    failed: bool = False
    visited: int = 0
    patched: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class _Applied:
    """Bookkeeping of one patched slot: its signature and the backups of its weight and (maybe) bias."""

    slot: Slot
    signature: tuple
    backups: list[TensorBackup]


@dataclass
class _Prepared:
    """A slot ready to be computed: its weight backup and a destination that holds exactly W₀ once ``copies`` ran
    (or that ``compute_slot`` fills from ``w0`` itself).

    dest: the Parameter's data (copy strategy), a new tensor to install (swap), or the tensor installed last time
        (``reused``: a switch).
    copies: (destination, source) pairs still to copy: W₀ into the new tensor or back into the reused one, or into the
        copy strategy's pristine backup. Memory-bound; ``_fill`` runs them, on the stager's helper thread for CPU weights.
    w0: the pristine weight when ``dest`` gets W₀ inside ``compute_slot`` (a streamed slot, ``streams_rows``), else
        None.
    outcome: the slot's result when the helper thread computed it (``_stream``), else None.
    """

    backup: TensorBackup
    dest: torch.Tensor
    reused: bool
    copies: list[tuple[torch.Tensor, torch.Tensor]]
    w0: torch.Tensor | None = None
    outcome: SlotResult | None = None

    @property
    def hidden(self) -> bool:
        """Writing ``dest`` is safe on another thread at any time: the model does not see it yet (a new swap tensor),
        or the slot is registered to be restored unconditionally (a reused tensor)."""
        return self.reused or self.backup.strategy == "swap"


@contextlib.contextmanager
def _thread_modes(devices: set[torch.device]) -> Iterator[None]:
    """The calling thread's torch modes for patch work: no autograd, no inference tensors, no autocast (A1111 calls
    activate inside CUDA autocast). Thread-local, so the stager's helper thread enters them for its own steps."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.no_grad())
        for device_type in sorted({d.type for d in devices} | {"cpu"}):
            try:
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            except RuntimeError:  # a device type without autocast support has no autocast to turn off
                pass
        yield


@contextlib.contextmanager
def _math_mode(devices: set[torch.device]) -> Iterator[None]:
    """``_thread_modes`` plus float32 products in full float32 on GPUs (``_full_float32_matmul``, a process-wide
    setting: entered once, on the thread that calls ``apply``)."""
    with _thread_modes(devices), contextlib.ExitStack() as stack:
        if any(d.type == "cuda" for d in devices):
            stack.enter_context(_full_float32_matmul())
        yield


@contextlib.contextmanager
def _full_float32_matmul() -> Iterator[None]:
    """Turn TF32 off for float32 matrix products on CUDA while the patch is computed, then put the host's setting back.

    The webui allows TF32 at startup (``torch.backends.cuda.matmul.allow_tf32 = True`` on Ampere and newer), and with
    it cuBLAS rounds the inputs of float32 products to 10 mantissa bits: measured on an H100, deltas off by 1.5e-4 of a
    weight of 0.35, 40× the float32 tolerance. torch ≥ 2.9 refuses some reads once its legacy and its per-backend TF32
    settings were both written, so the per-backend one (``matmul.fp32_precision``) is saved and written back where it
    exists: that leaves every read as it was whichever of the APIs the host used; older torch has only ``allow_tf32``.
    The setting is process-wide, so a generation running at the same time on another thread runs its products in
    full float32 for these milliseconds (slower, never less exact).
    """
    matmul = torch.backends.cuda.matmul
    attr, full = ("fp32_precision", "ieee") if hasattr(matmul, "fp32_precision") else ("allow_tf32", False)
    previous = getattr(matmul, attr)
    setattr(matmul, attr, full)
    try:
        yield
    finally:
        setattr(matmul, attr, previous)


class Patcher:
    """Applies active LoRA sets to one model's modules and restores them.

    strategy: "swap" (restore is a pointer swap; both versions live on the weight's device while patched), "copy"
    (patch in place, pristine copy in CPU memory, pinned for GPU weights) or "auto" (swap on CPU, copy on GPUs).
    fuse: add the plain LoRA factors of one tensor as a single concatenated product ``[m₁s₁U₁|m₂s₂U₂]·[D₁;D₂]``
        instead of one ``addmm_`` per LoRA. None (default) fuses on accelerators only: on CPU the products are
        compute-bound and fusing measured 3–12 % slower (docs/PERFORMANCE.md); on a GPU it saves a pass over W.
    overlap: use a helper thread for CPU slots: it prepares them (new tensors, pristine copies) while the caller
        computes, and computes a balanced share of the streamed low-precision swap slots. None
        (default) overlaps when the machine has more cores than torch's intra-op threads, so that a core is idle
        while the products run; with as many threads as cores the kernels already use every core, and a helper thread
        only competes with them (measured 1.5–3× slower, docs/PERFORMANCE.md). Results are bit-identical either way.
    """

    def __init__(self, strategy: str = "auto", fuse: bool | None = None, overlap: bool | None = None) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        self.strategy = strategy
        self.fuse = fuse
        self.overlap = overlap
        # Tensors were made (and freed) since freed memory last went back to the OS: see ``release_memory``.
        self._pooled = False
        self._applied: dict[int, _Applied] = {}
        # Pinned blocks the copy strategy's backups of CUDA weights are carved from; dropped when nothing is patched.
        self._pinned = PinnedSlabs()
        # The last successfully applied request: (identity key, the entries themselves so the ids in the key stay
        # valid, the planning problems to report again). Lets an unchanged request skip planning entirely.
        self._last: tuple[tuple, list[ActiveLora], list[Problem]] | None = None
        self._lock = threading.RLock()

    # -- public API -------------------------------------------------------------------------------------------------

    @property
    def is_patched(self) -> bool:
        """True while any tensor holds a LoRA update."""
        with self._lock:
            return bool(self._applied)

    def apply(self, active: Sequence[ActiveLora]) -> ApplyResult:
        """Make the model hold exactly the update of ``active`` (an empty sequence restores everything).

        Order of ``active`` does not matter (bit-identical results). Applying the same set again does nothing.
        """
        with self._lock:
            request = _request_key(active)
            if self._last is not None and self._last[0] == request and self.verify():
                return ApplyResult(problems=list(self._last[2]), patched=len(self._applied))
            self._last = None
            slots, problems = build_plan(active)
            plan_problems = list(problems)
            wanted = {key: slot.signature() for key, slot in slots.items()}
            # A record is kept only if its contributions are unchanged and its tensors are still the ones installed.
            kept = {
                k
                for k, rec in self._applied.items()
                if wanted.get(k) == rec.signature and all(b.matches_installed() for b in rec.backups)
            }
            stale = [k for k in self._applied if k not in kept]
            fresh = [k for k in slots if k not in kept]
            result = ApplyResult(problems=problems)
            if not stale and not fresh:
                result.patched = len(self._applied)
                self._last = (request, list(active), plan_problems)
                return result
            result.changed = True
            self._pooled = True
            result.visited = len(set(stale) | set(fresh))
            current: Slot | None = None
            skipped: dict[str, list[tuple[str, str]]] = {}
            try:
                devices = _devices(slots.values())
                with _math_mode(devices):
                    reuse: dict[int, TensorBackup] = {}
                    for key in stale:
                        backup = self._reusable(key, slots.get(key))
                        if backup is None:
                            problems.extend(self._restore_one(self._applied.pop(key)))
                        else:
                            reuse[key] = backup
                    with Stager(self._overlaps(), lambda: _thread_modes(devices)) as stager:
                        jobs = []
                        for key in fresh:
                            current = slots[key]
                            jobs.append((key, self._reserve(current, reuse.get(key))))
                        current = None
                        shared = _shareable(jobs) if stager.threaded else set()
                        # The helper runs every fill first, then the shared slots: the caller's own slots are never
                        # queued behind a whole computation.
                        takes = {
                            key: stager.submit(_on_cpu(slots[key]), _fill, ready, stealable=True)
                            for key, ready in jobs
                            if key not in shared
                        }
                        if shared:
                            # Made on the caller's thread, so the helper allocates nothing (memory a thread
                            # allocates stays in its own malloc arena, which malloc_trim does not empty): one scratch
                            # block for each thread, as each runs its steps one at a time.
                            size = max(scratch_elements(p.dest) for k, p in jobs if k in shared)
                            scratches = _Scratches(
                                threading.get_ident(), torch.empty(size), torch.empty(size)
                            )
                            for key, ready in jobs:
                                if key in shared:
                                    current = slots[key]
                                    factors = stream_factors(current, ready.dest, self._fuse(ready.dest))
                                    takes[key] = stager.submit(
                                        True, _stream, ready, factors, scratches, stealable=True
                                    )
                        order = sorted(takes, key=lambda k: k in shared)
                        uploader = Uploader(slots, order)
                        for key in order:
                            current = slots[key]
                            self._apply_one(key, current, skipped, takes[key](), uploader)
                        del uploader
                    current = None
                    _synchronize(devices)
            except Exception as exc:  # anything at all: the model must not stay half patched (USERS F8)
                self._restore_all()
                result.failed = True
                result.problems.append(_failure_problem(current, exc))
                # An exception from the helper thread is also held by its Future, which this frame holds: drop the
                # traceback so that cycle does not keep this frame and its backups alive until the next gc.
                exc.__traceback__ = None
            else:
                self._last = (request, list(active), plan_problems)
                # An empty set, or one that patched nothing: no backup is left in a pinned slab.
                if not self._applied:
                    self._pinned.reset()
            result.problems.extend(_skip_problems(skipped))
            result.patched = len(self._applied)
            return result

    def restore(self, moved: bool = False, release_memory: bool = False) -> list[Problem]:
        """Restore every patched tensor bit-exactly and free all backups.

        release_memory: also call ``release_memory()``; without it the allocator keeps the freed memory for the next
        apply, which is then faster.

        Tensors that were replaced behind the patcher's back (see ``verify``) are left as they are and reported,
        unless ``moved``: the host knows they were only moved or re-wrapped (``module.to(device)`` in low-VRAM modes
        replaces ``.data`` with a copy of the patched values), so the pristine values are copied into them.
        """
        with self._lock:
            problems = self._restore_all(moved)
            if release_memory:
                self.release_memory()
            return problems

    def release_memory(self) -> None:
        """Hand freed CPU memory back to the OS (``patching/memory.py``) if this patcher made tensors since the last
        release. Hosts call it when LoRAs stop being used; call ``restore`` first to free the patch itself."""
        with self._lock:
            if self._pooled:
                release_freed_memory()
                self._pooled = False

    def drop_backups(self) -> None:
        """Forget all backups without restoring: the host reloaded weights into the same modules (checkpoint switch).

        Biases the patcher created are removed, as they belong to no checkpoint.
        """
        with self._lock:
            for rec in self._applied.values():
                for backup in rec.backups:
                    backup.discard()
            self._applied.clear()
            self._pinned.reset()
            self._last = None

    def verify(self) -> bool:
        """True when every tensor the patcher changed still is the tensor it installed (same storage, no write since).

        False means the host replaced or reloaded patched weights (A1111 model cache, CONTRACT §8.4): call
        ``drop_backups()`` then, not ``restore()``.
        """
        with self._lock:
            return all(b.matches_installed() for rec in self._applied.values() for b in rec.backups)

    def only_moved(self) -> bool:
        """True when ``verify()`` fails only because patched tensors were moved (``module.to(device)``: new storage,
        same values, nothing written since), none reloaded in place: then ``restore(moved=True)`` puts the originals
        back into the moved tensors, where ``drop_backups()`` would leave the LoRA in the model for good."""
        with self._lock:
            changed = [
                b
                for rec in self._applied.values()
                for b in rec.backups
                if b.installed is not None and not b.matches_installed()
            ]
            return bool(changed) and all(b.was_moved() for b in changed)

    def fingerprint(self) -> tuple:
        """A cheap hashable summary of the installed tensors (storage pointer, version, shape, dtype of each)."""
        with self._lock:
            return tuple(b.installed for key in sorted(self._applied) for b in self._applied[key].backups)

    def held_bytes(self) -> int:
        """Bytes of backups currently kept alive (pristine copies or swapped-out originals); 0 when restored."""
        with self._lock:
            return sum(b.held_bytes() for rec in self._applied.values() for b in rec.backups)

    def patched_layers(self) -> list[str]:
        """Canonical names of the patched layers (for logs and inspectors)."""
        with self._lock:
            return sorted(rec.slot.label for rec in self._applied.values())

    # -- internals --------------------------------------------------------------------------------------------------

    def _overlaps(self) -> bool:
        if self.overlap is not None:
            return self.overlap
        return (os.cpu_count() or 1) > torch.get_num_threads()

    def _fuse(self, dest: torch.Tensor) -> bool:
        return self.fuse if self.fuse is not None else dest.device.type != "cpu"

    def _reusable(self, key: int, slot: Slot | None) -> TensorBackup | None:
        """For a slot that stays patched with other contributions: its weight backup, when the new sum can be written
        straight over the tensor installed last time (no restore pass, no new allocation). Bias backups of the
        record are restored here; the record stays registered so a failure still restores the weight."""
        rec = self._applied[key]
        if slot is None or not rec.backups or not all(b.matches_installed() for b in rec.backups):
            return None
        weight = rec.backups[0]
        current = getattr(slot.module, slot.weight_attr, None)
        if weight.attr != slot.weight_attr or weight.created or weight.original is None or current is None:
            return None
        if weight.original.device != current.device and weight.strategy != "copy":
            return None  # a swapped-out original on another device than the weight now: restore, then patch
        for bias in rec.backups[1:]:
            bias.restore()
        rec.backups[1:] = []
        return weight

    def _reserve(self, slot: Slot, reuse: TensorBackup | None) -> _Prepared:
        """Take the weight's backup and allocate the slot's destination, leaving the copies of W₀ to ``_fill``.

        Runs on the caller's thread: memory allocated there comes from the allocator's main arena, which reuses it
        from one apply to the next; allocated on a helper thread it went to a per-thread arena and was slower to get
        and to free. The copies touch the pages, so the page faults are taken where they run.
        """
        current = getattr(slot.module, slot.weight_attr).detach()
        if reuse is not None:
            # About to be overwritten: a failure from now on restores it unconditionally.
            reuse.installed = None
            return _swap_destination(slot, reuse, current, True)
        on_cpu = current.device.type == "cpu"
        backup = TensorBackup.take(
            slot.module, slot.weight_attr, self.strategy, fill=not on_cpu, pinned=self._pinned
        )
        if backup.strategy == "copy":
            return _Prepared(backup, current, False, [] if not on_cpu else [(backup.original, current)])
        return _swap_destination(slot, backup, fresh_memory.empty_like(current), False)

    def _apply_one(
        self,
        key: int,
        slot: Slot,
        skipped: dict[str, list[tuple[str, str]]],
        prepared: _Prepared,
        uploader: Uploader,
    ) -> None:
        weight_backup = prepared.backup
        weight_backup.installed = None  # being written: a failure now restores it unconditionally
        rec = _Applied(slot, slot.signature(), [weight_backup])
        # Registered before anything is written, so a failure below is undone by _restore_all.
        self._applied[key] = rec
        outcome = prepared.outcome
        if outcome is None:
            # The same contributions with their factors already on the weight's device (one copy per chunk).
            on_device = uploader.slot_for(key)
            outcome = compute_slot(
                on_device, prepared.dest, _bias(slot), self._fuse(prepared.dest), prepared.w0
            )
        for contribution, reason in outcome.skipped:
            skipped.setdefault(contribution.lora_name, []).append((contribution.target.canonical, reason))
        if outcome.weight_changed:
            weight_backup.install(prepared.dest)
        else:  # only the bias changes, or every contribution was skipped
            if prepared.reused:
                weight_backup.restore()
            rec.backups.remove(weight_backup)
        if outcome.bias is not None:
            bias_backup = TensorBackup.take(slot.module, slot.bias_attr, self.strategy, pinned=self._pinned)
            rec.backups.append(bias_backup)
            bias_backup.install(outcome.bias)
        if not rec.backups:
            del self._applied[key]

    def _restore_one(self, rec: _Applied, moved: bool = False) -> list[Problem]:
        problems = []
        for backup in rec.backups:
            # installed is None: the failure happened while this slot was being written; its original is certain.
            if backup.installed is None or backup.matches_installed():
                backup.restore()
            elif moved and backup.restore_into_current():
                continue
            else:
                backup.discard()
                problems.append(
                    Problem(
                        rec.slot.label,
                        "This layer was replaced or reloaded while a LoRA was applied, so its original was not put "
                        "back (the new weights were kept). Reload the checkpoint if images look wrong.",
                        "warning",
                    )
                )
        return problems

    def _restore_all(self, moved: bool = False) -> list[Problem]:
        self._last = None
        problems: list[Problem] = []
        records = list(self._applied.values())
        self._applied.clear()
        with _thread_modes(_devices(rec.slot for rec in records)):  # copies and swaps: no products
            for rec in records:
                problems.extend(self._restore_one(rec, moved))
            _synchronize(_devices(rec.slot for rec in records))
        self._pinned.reset()
        return problems


def _request_key(active: Sequence[ActiveLora]) -> tuple:
    """Identity of a request: the same ResolvedLora objects (with as many layers) at the same multipliers, ranks and
    block weights."""
    return tuple(
        (id(e.lora), len(e.lora.layers), float(e.te), float(e.unet), e.dyn, getattr(e, "blocks", None))
        for e in active
    )


def _devices(slots) -> set[torch.device]:
    devices = set()
    for slot in slots:
        tensor = getattr(slot.module, slot.weight_attr, None)
        if isinstance(tensor, torch.Tensor):
            devices.add(tensor.device)
    return devices


def _swap_destination(slot: Slot, backup: TensorBackup, dest: torch.Tensor, reused: bool) -> _Prepared:
    """A swap slot writing ``dest`` (new, or installed last time): W₀ is copied into it first, unless the slot is
    streamed, which reads W₀ straight from the backup."""
    if streams_rows(slot, dest, backup.original):
        return _Prepared(backup, dest, reused, [], w0=backup.original)
    return _Prepared(backup, dest, reused, [(dest, backup.original)])


def _bias(slot: Slot) -> torch.Tensor | None:
    bias = getattr(slot.module, slot.bias_attr, None)
    return None if bias is None else bias.detach()


def _fill(prepared: _Prepared) -> _Prepared:
    """Run a prepared slot's pending copies (may run on the stager's helper thread)."""
    for dest, source in prepared.copies:
        dest.copy_(source)
    prepared.copies = []
    return prepared


@dataclass
class _Scratches:
    """The float32 blocks streamed slots use: one for the thread that called ``apply``, one for the helper."""

    caller: int
    for_caller: torch.Tensor
    for_helper: torch.Tensor

    def mine(self) -> torch.Tensor:
        return self.for_caller if threading.get_ident() == self.caller else self.for_helper


def _stream(prepared: _Prepared, factors: list[Factors], scratches: _Scratches) -> _Prepared:
    """Compute a shared streamed slot (on the stager's helper thread, or on the caller when it takes the step over);
    the caller installs the outcome. The bits do not depend on the thread or on the scratch block used."""
    stream_rows(prepared.w0, prepared.dest, factors, scratches.mine())
    prepared.outcome = SlotResult(weight_changed=True)
    return prepared


def _shareable(jobs: list[tuple[int, _Prepared]]) -> set[int]:
    """The slots that are queued for the helper thread whole: streamed slots (low-precision CPU weights with plain
    factors, ``streams_rows``) whose destination is ``hidden``. They need no copy of W₀ first and the caller can hand
    over everything they need, so the helper allocates nothing, and either thread may compute them (both run the same
    kernels with one intra-op thread, see ``Patcher._overlaps``)."""
    return {key for key, prepared in jobs if prepared.w0 is not None and prepared.hidden}


def _on_cpu(slot: Slot) -> bool:
    tensor = getattr(slot.module, slot.weight_attr, None)
    return isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu"


def _synchronize(devices: set[torch.device]) -> None:
    """Wait for the work queued on each accelerator (CUDA, MPS, XPU, ...), so apply and restore return with the
    weights and backups written."""
    for device in devices:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type not in ("cpu", "meta"):
            synchronize = getattr(getattr(torch, device.type, None), "synchronize", None)
            if synchronize is not None:
                synchronize()


def _failure_problem(slot: Slot | None, exc: BaseException) -> Problem:
    names = sorted({c.lora_name for c in slot.contributions}) if slot is not None else []
    layer = f" at layer {slot.label}" if slot is not None else ""
    return Problem(
        ", ".join(names) or "LoRA",
        f"Applying LoRA failed{layer}: {type(exc).__name__}: {exc}. The model was restored to its original weights "
        "and no LoRA is applied; fix or remove the LoRA named here and generate again.",
        "error",
    )


def _skip_problems(skipped: dict[str, list[tuple[str, str]]]) -> list[Problem]:
    problems = []
    for name, layers in sorted(skipped.items()):
        first_layer, first_reason = layers[0]
        problems.append(
            Problem(
                name,
                f"{len(layers)} layer(s) were skipped because the LoRA's shapes do not fit the model "
                f"(first: {first_layer}: {first_reason}). The LoRA is probably made for a different base model.",
                "warning",
                tuple(f"{layer}: {reason}" for layer, reason in layers),
            )
        )
    return problems


__all__ = ["STRATEGIES", "ApplyResult", "Contribution", "Patcher", "choose_strategy"]
