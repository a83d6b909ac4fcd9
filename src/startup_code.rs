//! The code that runs only while the service starts, handed back once it serves, as a
//! kernel frees its init sections.
//!
//! The release binary is laid out by `src/link-order.txt` (`scripts/link-order.sh`,
//! `build.rs`): the functions that run only at start sit together, between
//! [`floodgate_startup_code_begin`] and [`floodgate_startup_code_end`]. Their pages stay mapped
//! after they ran (about a megabyte of the idle RSS) though nothing runs them again;
//! [`release`] unmaps them and drops them from the page cache, so the memory is free, not only
//! out of the RSS. They are clean pages of the executable, so a function there that does run
//! again (a rare path shared with start-up, such as opening another database connection) is
//! read back in from the file by an ordinary page fault, at the cost of that fault. Builds
//! without the layout (debug, another linker, `FLOODGATE_LINK_ORDER=off`, a binary embedding
//! the library) release nothing.

use std::os::fd::AsRawFd;

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

/// Unmap the startup-only block's pages and drop them from the page cache; logs at debug how
/// much was released (nothing when this build has no such block or the kernel refused).
/// `scripts/link-order.sh` ends the start where this function is entered, by its name.
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
    // Where the block is in the file, found before it is unmapped, so that nothing after
    // the unmapping runs code of the block (the layout keeps this module's code and what it
    // calls out of it).
    let cached = cached_copy(start, len);
    // SAFETY: the range lies inside this executable's code, a private read-only mapping of
    // its file that is never written (no text relocations), so MADV_DONTNEED only drops the
    // page-table entries: the next execution of any of it faults the same bytes back in from
    // the file. No Rust object lives there.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let dropped = cached.and_then(|(exe, offset, len)| {
        // SAFETY: the descriptor is open for the call; the advice touches no memory of ours.
        match unsafe {
            libc::posix_fadvise(exe.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED)
        } {
            0 => Ok(()),
            rc => Err(std::io::Error::from_raw_os_error(rc)),
        }
    });
    if let Err(error) = dropped {
        tracing::debug!(%error, "startup code unmapped, left in the page cache");
    }
    Ok(len)
}

/// The executable and the offset and length in it of `[start, start + len)`, to drop those
/// pages from the page cache once they are unmapped. The kernel drops only pages no process
/// maps, so nothing in use goes.
fn cached_copy(
    start: usize,
    len: usize,
) -> std::io::Result<(std::fs::File, libc::off_t, libc::off_t)> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let offset = file_offset(&maps, start, len)
        .ok_or_else(|| std::io::Error::other("the code's mapping is not in /proc/self/maps"))?;
    let exe = std::fs::File::open("/proc/self/exe")?;
    let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    Ok((exe, offset, len))
}

/// The offset in its file of address `start`, from `/proc/self/maps` lines
/// (`low-high perms offset device inode path`), when one mapping holds all of
/// `[start, start + len)`.
fn file_offset(maps: &str, start: usize, len: usize) -> Option<u64> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (low, high) = fields.next()?.split_once('-')?;
        let low = usize::from_str_radix(low, 16).ok()?;
        let high = usize::from_str_radix(high, 16).ok()?;
        let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
        let inside = low <= start && start.checked_add(len)? <= high;
        inside.then(|| offset + (start - low) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::{file_offset, whole_pages};

    #[test]
    fn the_file_offset_comes_from_the_mapping_that_holds_the_range() {
        let maps = "55e0a1000000-55e0a1d68000 r--p 00000000 fe:00 5497024 /srv/floodgate\n\
                    55e0a1d69000-55e0a28dd000 r-xp 00d68000 fe:00 5497024 /srv/floodgate\n\
                    7f0000000000-7f0000021000 rw-p 00000000 00:00 0\n";
        assert_eq!(
            file_offset(maps, 0x55e0_a1e0_0000, 0x1000),
            Some(0xd6_8000 + 0x9_7000)
        );
        assert_eq!(file_offset(maps, 0x55e0_a28d_c000, 0x2000), None);
        assert_eq!(file_offset(maps, 0x1000, 0x1000), None);
        assert_eq!(file_offset("garbage\n", 0x1000, 0x1000), None);
    }

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
