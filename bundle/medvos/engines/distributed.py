"""torch.distributed set-up for multi-process runs (torchrun)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def init(backend: str | None = None) -> int:
    """Join the process group (NCCL with CUDA, else gloo) and ignite's distributed context on every rank.

    ignite creates extra process groups lazily the first time a handler asks for the rank; that is a collective
    call, so it must happen on all ranks at once (here) rather than only in rank-0 handlers (a deadlock).
    Returns the rank.
    """
    import ignite.distributed as idist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    idist.sync()
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    return dist.get_rank()


def finalize() -> None:
    """Leave together: barrier, then destroy every process group (ignite's extra ones included). Without the
    barrier a rank tearing down gloo while its peer still talks aborts with ``terminate called ...``."""
    import ignite.distributed as idist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        idist.finalize()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
