//! The parts of the executable that serving does not use, handed back once it serves, as a
//! kernel frees its init sections.
//!
//! The release binary is laid out by `src/link-order.txt` (`scripts/link-order.sh`,
//! `build.rs`): the code that serving runs comes first; then, between
//! [`floodgate_startup_code_begin`] and [`floodgate_startup_code_end`], the code that runs only
//! at start; then the code no profiled run reached (error paths, other configurations). The
//! pages of the last two, and of the read-only data (relocation and symbol tables read once by
//! the loader, the configuration's and documents' text), stay mapped once touched, and the
//! kernel maps their neighbours with them (fault-around, read-ahead): about 2 MiB of an idle
//! replica and more under load, though nothing serving runs needs them. [`release`] unmaps
//! them, drops them from the page cache (so the memory is free, not only out of the RSS) and
//! asks that they be read back one page at a time, so what serving does touch later costs
//! that page, not the 64–128 KiB around it. They are clean pages of the executable: anything
//! there that runs again is read back in from the file by an ordinary page fault. Builds
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

/// Release what serving does not use; logs at debug how much (nothing when this build has
/// no layout or the kernel refused). `scripts/link-order.sh` ends the start where this
/// function is entered, by its name.
pub fn release() {
    let released = release_unused().unwrap_or_else(|error| {
        tracing::debug!(%error, "startup code kept");
        0
    });
    tracing::debug!(kib = released / 1024, "startup code released");
}

fn release_unused() -> std::io::Result<usize> {
    if !cfg!(floodgate_link_order) {
        return Ok(0);
    }
    let begin = floodgate_startup_code_begin as *const () as usize;
    let end = floodgate_startup_code_end as *const () as usize;
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    let Some((from, _)) = whole_pages(begin, end, page) else {
        return Ok(0);
    };
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let exe = std::fs::File::open("/proc/self/exe")?;
    let mut released = 0;
    for unused in unused_ranges(&smaps, from) {
        // SAFETY: `unused_ranges` yields only ranges of this executable's private mappings
        // that are read-only and hold no anonymous (written) page: MADV_DONTNEED then drops
        // only page-table entries, and the next access faults the same bytes back in from
        // the file. No Rust object lives there. MADV_RANDOM only changes read-ahead.
        unsafe {
            let at = unused.start as *mut libc::c_void;
            if libc::madvise(at, unused.len, libc::MADV_DONTNEED) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::madvise(at, unused.len, libc::MADV_RANDOM);
        }
        released += unused.len;
        let (Ok(offset), Ok(len)) = (
            libc::off_t::try_from(unused.offset),
            libc::off_t::try_from(unused.len),
        ) else {
            continue;
        };
        // SAFETY: the descriptor is open for the call; the advice touches no memory of ours.
        // The kernel drops only cached pages that no process maps, so nothing in use goes.
        let rc =
            unsafe { libc::posix_fadvise(exe.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            let error = std::io::Error::from_raw_os_error(rc);
            tracing::debug!(%error, "unused code unmapped, left in the page cache");
        }
    }
    Ok(released)
}

/// A range of the executable's image that serving does not use, and its offset in the file.
#[derive(Debug, PartialEq, Eq)]
struct Unused {
    start: usize,
    len: usize,
    offset: u64,
}

/// From `/proc/self/smaps`: the code from `from` (the startup-only block's first whole page)
/// to the end of its mapping, and every other read-only mapping of the same file that holds
/// no anonymous page (not the RELRO segment, whose pages the loader wrote).
fn unused_ranges(smaps: &str, from: usize) -> Vec<Unused> {
    struct Mapping<'a> {
        low: usize,
        high: usize,
        perms: &'a str,
        offset: u64,
        file: (&'a str, &'a str),
        anonymous: Option<u64>,
    }
    let mut mappings: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((low, high)) = first.split_once('-') {
            let (Ok(low), Ok(high)) = (
                usize::from_str_radix(low, 16),
                usize::from_str_radix(high, 16),
            ) else {
                continue;
            };
            let (Some(perms), Some(offset), Some(device), Some(inode)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(offset) = u64::from_str_radix(offset, 16) else {
                continue;
            };
            mappings.push(Mapping {
                low,
                high,
                perms,
                offset,
                file: (device, inode),
                anonymous: None,
            });
        } else if first == "Anonymous:" {
            if let Some(last) = mappings.last_mut() {
                last.anonymous = fields.next().and_then(|kib| kib.parse().ok());
            }
        }
    }
    let Some(code) = mappings
        .iter()
        .find(|m| m.low <= from && from < m.high && m.perms == "r-xp" && m.file.1 != "0")
    else {
        return Vec::new();
    };
    let clean = |m: &Mapping<'_>| m.file == code.file && m.anonymous == Some(0);
    let mut unused = Vec::new();
    if clean(code) {
        unused.push(Unused {
            start: from,
            len: code.high - from,
            offset: code.offset + (from - code.low) as u64,
        });
    }
    unused.extend(
        mappings
            .iter()
            .filter(|m| m.perms == "r--p" && clean(m))
            .map(|m| Unused {
                start: m.low,
                len: m.high - m.low,
                offset: m.offset,
            }),
    );
    unused
}

#[cfg(test)]
mod tests {
    use super::{unused_ranges, whole_pages, Unused};

    /// A process's smaps: this executable's four segments (its code with `code_anon` KiB
    /// written), a library and an anonymous mapping.
    fn smaps(code_anon: u32) -> String {
        format!(
            "55e0a1000000-55e0a1d68000 r--p 00000000 fe:00 5497024 /srv/floodgate\n\
             Rss:                1280 kB\n\
             Anonymous:             0 kB\n\
             55e0a1d69000-55e0a28dd000 r-xp 00d68000 fe:00 5497024 /srv/floodgate\n\
             Anonymous:    {code_anon:>10} kB\n\
             55e0a28dd000-55e0a2937000 r--p 018da000 fe:00 5497024 /srv/floodgate\n\
             Anonymous:           360 kB\n\
             55e0a2937000-55e0a2941000 rw-p 01933000 fe:00 5497024 /srv/floodgate\n\
             Anonymous:            40 kB\n\
             7f0000000000-7f0000021000 r--p 00000000 fe:00 1234 /usr/lib/libc.so.6\n\
             Anonymous:             0 kB\n\
             7f0000100000-7f0000121000 rw-p 00000000 00:00 0\n\
             Anonymous:           132 kB\n"
        )
    }

    #[test]
    fn the_cold_code_and_the_clean_read_only_data_are_unused() {
        let data = Unused {
            start: 0x55e0_a100_0000,
            len: 0xd6_8000,
            offset: 0,
        };
        let cold_code = Unused {
            start: 0x55e0_a1e0_0000,
            len: 0x55e0_a28d_d000 - 0x55e0_a1e0_0000,
            offset: 0xd6_8000 + 0x9_7000,
        };
        assert_eq!(
            unused_ranges(&smaps(0), 0x55e0_a1e0_0000),
            vec![cold_code, data]
        );
        // Code with a written page (text relocations) is kept; the data still goes.
        let data = Unused {
            start: 0x55e0_a100_0000,
            len: 0xd6_8000,
            offset: 0,
        };
        assert_eq!(unused_ranges(&smaps(4), 0x55e0_a1e0_0000), vec![data]);
        // Not inside this executable's code: nothing.
        assert_eq!(unused_ranges(&smaps(0), 0x7f00_0010_0000), vec![]);
        assert_eq!(unused_ranges(&smaps(0), 0x55e0_a100_0000), vec![]);
        assert_eq!(unused_ranges("garbage\n", 0x1000), vec![]);
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
