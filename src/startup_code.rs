//! The executable's pages handed back once the service serves, as a kernel frees its init
//! sections: whatever serving then runs is read back in, page by page.
//!
//! At start the loader, the configuration, the migrations, the route table and the API
//! documents touch code and read-only data scattered over the whole binary, and the kernel
//! maps 64–128 KiB around each first touch (fault-around, read-ahead): about 16 MiB of an
//! idle replica is the executable's own clean pages, most of which serving never uses again.
//! [`release`] unmaps them, drops them from the page cache (so the memory is free, not only
//! out of the RSS) and asks that they be read back one page at a time, so what serving does
//! touch later costs that page, not the 64–128 KiB around it. They are clean pages of the
//! executable: anything there that runs again is read back in by an ordinary page fault.
//!
//! It needs no layout of the code and nothing derived from a particular build: it works the
//! same whatever toolchain, linker or build command made the binary. A page that holds
//! anything written (the loader's relocations) is never touched.

use std::os::fd::AsRawFd;

/// Release the executable's clean pages; logs at debug how much (nothing when the kernel
/// refused).
pub fn release() {
    let released = release_unused().unwrap_or_else(|error| {
        tracing::debug!(%error, "executable pages kept");
        0
    });
    tracing::info!(kib = released / 1024, "executable pages released");
}

fn release_unused() -> std::io::Result<usize> {
    // Any address of this executable's code names its mapping.
    let here = release as *const () as usize;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let exe = std::fs::File::open("/proc/self/exe")?;
    let mut released = 0;
    for unused in unused_ranges(&smaps, here) {
        // SAFETY: `unused_ranges` yields only ranges of this executable's private mappings
        // that are read-only and hold no anonymous (written) page: the advice below drops
        // only page-table entries and clean page-cache pages, and the next access faults the
        // same bytes back in from the file. No Rust object lives there.
        //
        // The order matters. MADV_RANDOM first, so a page faulted back in from now on is read
        // alone, not with its read-ahead neighbours. MADV_PAGEOUT then reclaims the pages
        // while they are still mapped here: the page cache holds the binary in large folios,
        // and the threads running meanwhile (this one included, returning into this very
        // code) map a page back at once; one mapped page would keep its whole folio (up to
        // 2 MiB) cached past the eviction below, and the kernel maps 64 KiB around every
        // later fault from it. MADV_PAGEOUT is advice (Linux 5.4+): refused, the rest still
        // helps. MADV_DONTNEED then drops what is left mapped, and POSIX_FADV_DONTNEED the
        // cached pages nobody maps.
        unsafe {
            let at = unused.start as *mut libc::c_void;
            libc::madvise(at, unused.len, libc::MADV_RANDOM);
            libc::madvise(at, unused.len, libc::MADV_PAGEOUT);
            if libc::madvise(at, unused.len, libc::MADV_DONTNEED) != 0 {
                return Err(std::io::Error::last_os_error());
            }
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

/// From `/proc/self/smaps`: the executable code mapping that holds `code`, and every
/// read-only mapping of the same file, each only if it holds no anonymous page (not the RELRO
/// segment, whose pages the loader wrote).
fn unused_ranges(smaps: &str, code: usize) -> Vec<Unused> {
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
    let Some(text) = mappings
        .iter()
        .find(|m| m.low <= code && code < m.high && m.perms == "r-xp" && m.file.1 != "0")
    else {
        return Vec::new();
    };
    mappings
        .iter()
        .filter(|m| {
            m.file == text.file
                && (m.perms == "r-xp" || m.perms == "r--p")
                && m.anonymous == Some(0)
        })
        .map(|m| Unused {
            start: m.low,
            len: m.high - m.low,
            offset: m.offset,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{unused_ranges, Unused};

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
    fn the_clean_code_and_read_only_data_of_this_executable_are_released() {
        let data = Unused {
            start: 0x55e0_a100_0000,
            len: 0xd6_8000,
            offset: 0,
        };
        let code = Unused {
            start: 0x55e0_a1d6_9000,
            len: 0x55e0_a28d_d000 - 0x55e0_a1d6_9000,
            offset: 0xd6_8000,
        };
        assert_eq!(unused_ranges(&smaps(0), 0x55e0_a200_0000), vec![data, code]);
        // Code with a written page (text relocations) is kept; the clean data still goes,
        // and the RELRO segment (written by the loader) never does.
        let data = Unused {
            start: 0x55e0_a100_0000,
            len: 0xd6_8000,
            offset: 0,
        };
        assert_eq!(unused_ranges(&smaps(4), 0x55e0_a200_0000), vec![data]);
        // An address outside this executable's code: nothing, not even a library.
        assert_eq!(unused_ranges(&smaps(0), 0x7f00_0010_0000), vec![]);
        assert_eq!(unused_ranges(&smaps(0), 0x55e0_a100_0000), vec![]);
        assert_eq!(unused_ranges("garbage\n", 0x1000), vec![]);
    }
}
