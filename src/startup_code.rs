//! The code that runs only while the service starts, handed back once it serves, as a
//! kernel frees its init sections.
//!
//! The release binary is laid out by `src/link-order.txt` (`scripts/link-order.sh`,
//! `build.rs`): the functions that run only at start sit together, between
//! [`floodgate_startup_code_begin`] and [`floodgate_startup_code_end`]. Their pages stay mapped
//! after they ran (about a megabyte of the idle RSS) though nothing runs them again;
//! [`release`] unmaps them. They are clean pages of the executable, so a function there that
//! does run again (a rare path shared with start-up) is read back in by an ordinary page
//! fault, at the cost of that fault. Builds without the layout (debug, another linker,
//! `FLOODGATE_LINK_ORDER=off`, a binary embedding the library) release nothing.

/// First function of the startup-only block; never called, only its address is read.
#[no_mangle]
#[inline(never)]
pub extern "C" fn floodgate_startup_code_begin() -> u32 {
    // Distinct bodies, so the two markers are not merged into one function.
    0x6265_6769
}

/// Last function of the startup-only block; never called, only its address is read.
#[no_mangle]
#[inline(never)]
pub extern "C" fn floodgate_startup_code_end() -> u32 {
    0x656e_6421
}

/// The whole pages inside `[begin, end)`; `None` when there are none or the markers are not
/// laid out as a block (out of order, or further apart than any startup code could be).
fn whole_pages(begin: usize, end: usize, page: usize) -> Option<(usize, usize)> {
    const LARGEST_BLOCK: usize = 64 << 20;
    if end <= begin || end - begin > LARGEST_BLOCK || !page.is_power_of_two() {
        return None;
    }
    let first = begin.checked_add(page - 1)? & !(page - 1);
    let last = end & !(page - 1);
    (last > first).then(|| (first, last - first))
}

/// Unmap the startup-only block's pages, and log (at debug, which `scripts/link-order.sh`
/// waits for) how much was released: nothing when this build has no such block or the kernel
/// refused.
pub fn release() {
    let released = release_block().unwrap_or_else(|error| {
        tracing::debug!(%error, "startup code kept");
        0
    });
    tracing::debug!(kib = released / 1024, "startup code released");
}

fn release_block() -> std::io::Result<usize> {
    if !cfg!(floodgate_link_order) {
        return Ok(0);
    }
    let begin = floodgate_startup_code_begin as *const () as usize;
    let end = floodgate_startup_code_end as *const () as usize;
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    let Some((start, len)) = whole_pages(begin, end, page) else {
        return Ok(0);
    };
    // SAFETY: the range lies inside this executable's code, a private read-only mapping of
    // its file that is never written (no text relocations), so MADV_DONTNEED only drops the
    // page-table entries: the next execution of any of it faults the same bytes back in from
    // the file. No Rust object lives there.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::whole_pages;

    #[test]
    fn only_whole_pages_inside_the_markers_are_released() {
        assert_eq!(whole_pages(0x1010, 0x5008, 0x1000), Some((0x2000, 0x3000)));
        assert_eq!(whole_pages(0x1000, 0x3000, 0x1000), Some((0x1000, 0x2000)));
        assert_eq!(whole_pages(0x1010, 0x2ff0, 0x1000), None);
        assert_eq!(whole_pages(0x5000, 0x1000, 0x1000), None);
        assert_eq!(whole_pages(0x1000, 0x1000 + (65 << 20), 0x1000), None);
        assert_eq!(whole_pages(0x1000, 0x9000, 0), None);
        assert_eq!(whole_pages(usize::MAX - 10, usize::MAX, 0x1000), None);
    }
}
