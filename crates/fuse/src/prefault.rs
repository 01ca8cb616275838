//! Request buffers that are in memory before the first request lands in
//! them, so that a daemon killed mid-request never turns a write into EIO.
//!
//! The kernel copies each request into the buffer a daemon thread reads
//! into. If that buffer's pages are not mapped yet, the copy has to fault
//! them in, and a copy that faults while the daemon is being killed fails:
//! the kernel then answers the request itself, with EIO, and never sends it
//! again, because no daemon ever read it. For a WRITE that means the
//! application's `write(2)` fails and its data never reaches weir, while a
//! write whose copy finished is resent to the replacement and lands. Checked
//! on 6.18: a daemon killed 5 ms into a 48 MiB write failed the write with
//! EIO in about half the runs, every time on a worker thread's first large
//! request.
//!
//! fuser gives each worker one zeroed buffer of 16 MiB + 4 KiB, allocated
//! once when the thread starts, which the allocator maps lazily. [`Prefault`]
//! is a global allocator that maps the first [`PREFAULT_BYTES`] of every
//! zeroed allocation of at least [`PREFAULT_MIN`] at once: the largest
//! request the kernel sends (a 1 MiB write plus its header) then never
//! faults. That costs about 1 MiB per worker thread, which any worker that
//! serves one large write uses anyway.

use std::alloc::{GlobalAlloc, Layout, System};

/// Zeroed allocations at least this large are FUSE request buffers (fuser
/// allocates 16 MiB + 4 KiB); nothing else in weir asks for zeroed memory
/// this large.
pub const PREFAULT_MIN: usize = 8 << 20;

/// What is mapped of each: the largest request (a write of `max_write`,
/// 1 MiB) with its headers.
pub const PREFAULT_BYTES: usize = (1 << 20) + (16 << 10);

/// The system allocator, mapping the start of large zeroed allocations
/// at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prefault;

// SAFETY: every call is forwarded to `System` with the same arguments; the
// only addition writes zeros into memory `System` just zeroed for us.
unsafe impl GlobalAlloc for Prefault {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() && layout.size() >= PREFAULT_MIN {
            // SAFETY: `ptr` points to `layout.size()` bytes we own.
            unsafe { populate(ptr, layout.size().min(PREFAULT_BYTES)) };
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Maps `len` bytes at `ptr` (already zero) writable. Writing a zero to each
/// page, rather than `madvise(MADV_POPULATE_WRITE)`, works on every kernel
/// and on memory the allocator did not get from `mmap`.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn populate(ptr: *mut u8, len: usize) {
    const PAGE: usize = 4096;
    let mut off = 0;
    while off < len {
        // SAFETY: `off < len`, inside the allocation. A volatile write, so
        // that the store of an unchanged zero is not optimised away.
        unsafe { ptr.add(off).write_volatile(0) };
        off += PAGE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident pages of the range, from mincore(2).
    fn resident(ptr: *mut u8, len: usize) -> usize {
        let page = 4096;
        let start = (ptr as usize) & !(page - 1);
        let end = ptr as usize + len;
        let pages = (end - start).div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: a query on memory this test owns; `vec` has one byte per page.
        let r = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    #[test]
    fn large_zeroed_buffers_start_resident_and_zero() {
        let size = (16 << 20) + 4096;
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero layout; freed below with the same layout.
        let ptr = unsafe { Prefault.alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        let head = resident(ptr, PREFAULT_BYTES);
        assert!(
            head >= PREFAULT_BYTES / 4096,
            "only {head} pages of the head are mapped"
        );
        // SAFETY: `ptr` holds `size` initialised (zero) bytes.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, size) };
        assert!(bytes.iter().all(|b| *b == 0));
        // SAFETY: allocated above with this layout.
        unsafe { Prefault.dealloc(ptr, layout) };
    }
}
