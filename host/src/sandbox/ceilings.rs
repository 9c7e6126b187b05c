//! What one call may hold: guest memories and tables under one memory ceiling, and
//! the host-side state a guest can make the host keep (resource-table entries,
//! header maps, data copied into host calls, random bytes) capped from the same
//! ceiling.
//!
//! The bound, per call (README, "What a call costs the host, at most"): guest linear
//! memory and tables together stay within the memory ceiling `M`; host-side state
//! the guest creates stays within about `max(1.2 M, 36 MiB)`: at most
//! `resource_capacity(M)` table entries, none of which holds more than about
//! 288 KiB of the guest's making (a header map at most [`FIELD_SIZE_LIMIT`]; an
//! outgoing request its headers, four [`URI_PART_LIMIT`] strings and a finished
//! body of [`BODY_CHUNKS`] + 1 chunks of [`BODY_CHUNK`] with trailers); one host
//! call copies at most `max(M, 1 MiB)` bytes out of the guest, transiently.

use wasmtime::ResourceLimiter;

/// Bytes one table element is charged against the memory ceiling (a function
/// reference: a pointer).
const TABLE_ELEMENT_BYTES: u64 = 8;

/// Elements any one table may grow to.
const TABLE_ELEMENTS: usize = 100_000;

/// The most one header map (a `wasi:http` `fields`) may hold, in wasi-http's
/// in-memory accounting; wasmtime's default is 128 KiB. Real servers refuse headers
/// far smaller than this on the wire.
pub(crate) const FIELD_SIZE_LIMIT: usize = 64 * 1024;

/// What the largest entry a guest can make the host keep holds, at most, about: an
/// outgoing request with a full header map, four full URI parts, and a finished body
/// holding its buffered chunks and a full map of trailers (288 KiB).
const ENTRY_BYTES: u64 = 256 * 1024;

/// The fewest resource-table entries a call gets, whatever its ceiling: room for any
/// real guest's streams, pollables, requests and header maps.
const MIN_RESOURCES: u64 = 128;

/// The most resource-table entries a call gets (wasmtime's default is a million).
const MAX_RESOURCES: u64 = 16 * 1024;

/// The most live component-model handles a call may hold (wasmtime's default is
/// 100,000): a handle costs the host a few words.
pub(crate) const COMPONENT_HANDLES: usize = 16 * 1024;

/// The most bytes a guest may set as an outgoing request's authority, path, method
/// or scheme: far beyond any real one (servers refuse request lines over 8 KiB).
pub(crate) const URI_PART_LIMIT: usize = 8 * 1024;

/// The size of one chunk of an outgoing body the host buffers (wasmtime's default
/// is 1 MiB), and how many it buffers.
pub(crate) const BODY_CHUNK: usize = 64 * 1024;
pub(crate) const BODY_CHUNKS: usize = 1;

/// The most random bytes a guest may ask the host for in one call of
/// `wasi:random`; the host allocates them before handing them over.
pub(crate) const RANDOM_LIMIT: u64 = 1 << 20;

/// The least hostcall fuel (bytes copied from guest to host per host call).
const MIN_HOSTCALL_BYTES: u64 = 1 << 20;

/// How many entries a call's resource table may hold under a memory ceiling of
/// `memory` bytes: enough of the largest entries to fill the ceiling about once.
pub(crate) fn resource_capacity(memory: u64) -> usize {
    let entries = (memory / ENTRY_BYTES).clamp(MIN_RESOURCES, MAX_RESOURCES);
    usize::try_from(entries).unwrap_or(usize::MAX)
}

/// How many bytes one host call may copy out of a guest under a memory ceiling of
/// `memory` bytes: about what the guest can hold anyway.
pub(crate) fn hostcall_bytes(memory: u64) -> usize {
    usize::try_from(memory.max(MIN_HOSTCALL_BYTES)).unwrap_or(usize::MAX)
}

/// The memory ceiling of one call, summed over all of its instance's memories and
/// tables. It remembers a refusal, so that the trap a refused guest then hits (a
/// Rust guest aborts on a failed allocation) is reported as `memory-limit`.
pub(crate) struct MemoryCeiling {
    limit: u64,
    used: u64,
    refused: bool,
}

impl MemoryCeiling {
    pub(crate) fn new(limit: u64) -> MemoryCeiling {
        MemoryCeiling {
            limit,
            used: 0,
            refused: false,
        }
    }

    /// What is left under the ceiling: the most a nested call may be given.
    pub(crate) fn left(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Whether the ceiling refused a growth.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Marks the call as having hit its ceiling (host-side state counts too).
    pub(crate) fn refuse(&mut self) {
        self.refused = true;
    }

    fn grow(&mut self, bytes: u64) -> bool {
        if self.used.saturating_add(bytes) > self.limit {
            self.refused = true;
            return false;
        }
        self.used += bytes;
        true
    }
}

impl ResourceLimiter for MemoryCeiling {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current) as u64))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > TABLE_ELEMENTS {
            self.refused = true;
            return Ok(false);
        }
        let growth = desired.saturating_sub(current) as u64;
        Ok(self.grow(growth.saturating_mul(TABLE_ELEMENT_BYTES)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_the_ceiling() {
        let mut ceiling = MemoryCeiling::new(1 << 20);
        assert!(ceiling.memory_growing(0, 1 << 19, None).expect("ok"));
        assert_eq!(ceiling.left(), 1 << 19);
        // 70_000 elements at 8 bytes: more than the half MiB left.
        assert!(!ceiling.table_growing(0, 70_000, None).expect("ok"));
        assert!(ceiling.refused());
        assert!(ceiling.table_growing(0, 1_000, None).expect("ok"));
        assert_eq!(ceiling.left(), (1 << 19) - 8_000);
    }

    #[test]
    fn host_side_caps_follow_the_ceiling() {
        assert_eq!(resource_capacity(0), 128);
        assert_eq!(resource_capacity(64 << 20), 256);
        assert_eq!(resource_capacity(u64::MAX), 16 * 1024);
        assert_eq!(hostcall_bytes(0), 1 << 20);
        assert_eq!(hostcall_bytes(64 << 20), 64 << 20);
    }
}
