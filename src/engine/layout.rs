//! How the run maps onto shards: the backend (`io::probe::select`), the descriptor limit it
//! works under, and each shard's share of every scenario (`ShardPlan`, `GroupPlan`).

use super::{split, EngineError, TABLE_SLACK};
use crate::io::backend::BackendKind;
use crate::io::probe::{self, Selected};
use crate::io::sock;
use crate::plan::{Backend, Prepared};

/// How the run maps onto shards: the backend, the limit, each shard's connections and the
/// sockets each may hold.
pub(super) struct Layout {
    pub(super) shards: usize,
    pub(super) nofile: (u64, u64),
    pub(super) capacity: u64,
    pub(super) shard_counts: Vec<u64>,
    pub(super) backend: Selected,
    /// Slots per shard ([`IoConfig::files`](crate::io::backend::IoConfig::files)).
    pub(super) files: Vec<u32>,
    /// What the other backend would hold here.
    pub(super) other_capacity: (BackendKind, u64),
}

/// Connections the run can hold with `kind`: io_uring, (soft limit − 64) per shard, each ring
/// has its own table; epoll, the process's fd table less what the process keeps for itself.
pub(super) fn capacity_of(kind: BackendKind, soft: u64, shards: usize) -> u64 {
    match kind {
        BackendKind::Uring => soft.saturating_sub(TABLE_SLACK) * shards as u64,
        BackendKind::Epoll => sock::epoll_capacity(soft, shards as u64),
    }
}

/// The backend `backend` asks for where it can run, and the descriptor limit (raised to the
/// hard limit where allowed).
pub(super) fn backend_and_limit(backend: Backend) -> Result<(Selected, (u64, u64)), EngineError> {
    let want = match backend {
        Backend::Auto => None,
        Backend::Uring => Some(BackendKind::Uring),
        Backend::Epoll => Some(BackendKind::Epoll),
    };
    let selected = probe::select(want).map_err(|e| EngineError::Backend(e.0))?;
    let nofile = sock::raise_nofile_limit()
        .or_else(|_| sock::nofile_limit())
        .unwrap_or((1024, 1024));
    Ok((selected, nofile))
}

/// The connections this client can hold for `run` (its backend, shards and descriptor
/// limit): the ceiling of a connections search.
pub fn capacity(backend: Backend, shards: usize) -> Result<u64, EngineError> {
    let (selected, nofile) = backend_and_limit(backend)?;
    Ok(capacity_of(selected.kind, nofile.0, shards.max(1)))
}

/// Chooses the backend and plans each shard's share, checking it fits the descriptor limits.
pub(super) fn layout(run: &Prepared) -> Result<Layout, EngineError> {
    let (backend, nofile) = backend_and_limit(run.main().backend)?;
    let shards = run.main().cpus.len().max(1);
    let shard_counts: Vec<u64> = (0..shards)
        .map(|i| {
            run.scenarios
                .iter()
                .map(|p| split(p.connections, shards)[i])
                .sum()
        })
        .collect();
    let kind = backend.kind;
    let capacity = capacity_of(kind, nofile.0, shards);
    let other = match kind {
        BackendKind::Uring => BackendKind::Epoll,
        BackendKind::Epoll => BackendKind::Uring,
    };
    let other_capacity = (other, capacity_of(other, nofile.0, shards));
    let fits = match kind {
        // Sockets live in each shard's direct-descriptor table, not in the process's fd
        // table; the kernel caps each table at RLIMIT_NOFILE, so capacity grows with shards.
        BackendKind::Uring => shard_counts
            .iter()
            .all(|&n| n <= nofile.0.saturating_sub(TABLE_SLACK)),
        BackendKind::Epoll => shard_counts.iter().sum::<u64>() <= capacity,
    };
    if !fits {
        let (how, cpus) = match kind {
            BackendKind::Uring => (
                format!("each of the {shards} io_uring shard(s) holds at most RLIMIT_NOFILE connections"),
                ", add CPUs with --cpus",
            ),
            BackendKind::Epoll => (
                "with epoll every connection is one of the process's RLIMIT_NOFILE fds, across all shards"
                    .to_owned(),
                "",
            ),
        };
        let other = if other_capacity.1 > capacity && other == BackendKind::Uring {
            format!(
                "; io_uring would hold {} here ({})",
                other_capacity.1, backend.reason
            )
        } else {
            String::new()
        };
        return Err(EngineError::TooManyConnections {
            wanted: run.connections(),
            allowed: capacity,
            how,
            cpus,
            other,
            hard: nofile.1,
        });
    }
    let files = match kind {
        // Room for every connection twice over: a socket being closed keeps its slot until
        // the close completes, and a storm's burst of closes should not hold up the
        // replacements opened meanwhile (when the table is full, openings wait for a slot).
        // An unused slot costs 8 bytes of kernel memory.
        BackendKind::Uring => shard_counts
            .iter()
            .map(|&n| (2 * n + TABLE_SLACK).min(nofile.0).max(1) as u32)
            .collect(),
        // A close frees its fd at once; the fds left over are shared out for replacements
        // opened while a storm's closes are reaped.
        BackendKind::Epoll => {
            let spare = (capacity - shard_counts.iter().sum::<u64>()) / shards as u64;
            shard_counts
                .iter()
                .map(|&n| (n + spare.min(n + TABLE_SLACK)).max(1) as u32)
                .collect()
        }
    };
    Ok(Layout {
        shards,
        nofile,
        capacity,
        shard_counts,
        backend,
        files,
        other_capacity,
    })
}
