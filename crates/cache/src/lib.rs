//! weir's caches.
//!
//! - [`PageCache`]: file data in fixed-size pages on the local disk, one
//!   sparse file per object version, every page checksummed, bounded by a
//!   byte capacity with LRU eviction, and still warm after a restart.
//!   Whole, verified objects can be read by the kernel straight from their
//!   data file (FUSE passthrough), pinned against eviction meanwhile.
//! - [`MetaCache`]: stat results (including "does not exist") and directory
//!   listings, each kept for a TTL.

mod meta;
mod pages;
mod whole;

pub use meta::MetaCache;
pub use pages::{CacheError, CacheStats, ObjectKey, PageCache, PageCacheConfig};
